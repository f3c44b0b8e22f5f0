package onnxq

import (
	"strings"
	"testing"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

// allNodes lists the nodes of g and of every subgraph in it.
func allNodes(g *graph) []*node {
	var out []*node
	for i := range g.nodes {
		n := &g.nodes[i]
		out = append(out, n)
		for _, a := range n.attrs {
			for _, sg := range a.graphs {
				out = append(out, allNodes(sg.g)...)
			}
		}
	}
	return out
}

// dqAxes maps each DequantizeLinear output (a weight's name) to its axis
// attribute (-1 when absent), in every graph.
func dqAxes(m *model) map[string]int64 {
	out := map[string]int64{}
	scales := map[string]bool{} // outputs of DequantizeLinear nodes of uint8 scale codes
	for _, n := range allNodes(m.graph) {
		if n.opType == "DequantizeLinear" && len(n.inputs) > 1 {
			scales[n.inputs[1]] = true
		}
	}
	for _, n := range allNodes(m.graph) {
		if n.opType == "DequantizeLinear" && !scales[n.outputs[0]] {
			ax := int64(-1)
			if a := n.attr("axis"); a != nil {
				ax = a.i
			}
			out[n.outputs[0]] = ax
		}
	}
	return out
}

// TestGraphShapes quantizes the graph shapes of real exporters and checks
// what became of every weight (ORT runs them in TestORT).
func TestGraphShapes(t *testing.T) {
	type want struct {
		prefix, op, role, enc string
		axis                  int64 // DequantizeLinear axis; -2: no DequantizeLinear
		subgraph              bool
	}
	cases := map[string]struct {
		quantized int
		layers    []want
	}{
		"rnn_opset17": {4, []want{
			{"lstm_W", "LSTM", "weight", encInt8, 1, false},
			{"lstm_R", "LSTM", "weight", encInt8, 1, false},
			{"bias", "LSTM", "bias", encFP16, -2, false},  // through a Reshape
			{"gru_W", "GRU", "weight", encInt8, 1, false}, // [1, 3H, I] through Identity: rows on axis 1
			{"gru_R", "GRU", "weight", encInt8, 1, false},
		}},
		// Sliced, concatenated and unsqueezed inside two If bodies each:
		// quantized once, at the top, per row.
		"sliced_lstm_opset17": {2, []want{
			{"weight_ih", "LSTM", "weight", encInt8, 0, false},
			{"weight_hh", "LSTM", "weight", encInt8, 0, false},
			{"bias", "LSTM", "bias", encFP16, -2, false},
		}},
		// Two Ifs, each with a then (MatMul, Add, MatMul) and an else
		// (Gemm) branch.
		"if_const_opset17": {6, []want{
			{"W", "MatMul", "weight", encInt8, 1, true},
			{"bias", "Add", "other", encFP16, -2, true},
			{"W", "MatMul", "weight", encInt8, 1, true},
			{"W", "Gemm", "weight", encInt8, 0, true},
			{"bias", "Gemm", "bias", encFP16, -2, true},
			{"W", "MatMul", "weight", encInt8, 1, true},
			{"bias", "Add", "other", encFP16, -2, true},
			{"W", "MatMul", "weight", encInt8, 1, true},
			{"W", "Gemm", "weight", encInt8, 0, true},
			{"bias", "Gemm", "bias", encFP16, -2, true},
		}},
		"loop_opset17":      {1, []want{{"W", "MatMul", "weight", encInt8, 1, true}}},
		"scan_opset17":      {1, []want{{"W", "MatMul", "weight", encInt8, 1, true}}},
		"embedding_opset17": {2, []want{{"embedding", "Gather", "weight", encInt8, 0, false}, {"W", "MatMul", "weight", encInt8, 1, false}}},
		// Its 16-element bias would grow as fp16 with a Cast: kept.
		"convtranspose_opset17": {1, []want{{"deconv_W", "ConvTranspose", "weight", encInt8, 1, false}}},
	}
	for _, s := range testmodels.Shapes() {
		c, ok := cases[s.Name]
		if !ok {
			t.Fatalf("no expectations for %s", s.Name)
		}
		t.Run(s.Name, func(t *testing.T) {
			out, res := mustQuantize(t, s.Build(s.Opset, 1), perChannelNamed)
			if res.TensorsQuantized != c.quantized || res.TensorsSkipped != 0 {
				t.Errorf("quantized %d skipped %d, want %d/0", res.TensorsQuantized, res.TensorsSkipped, c.quantized)
			}
			axes := dqAxes(mustParse(t, out))
			for i, wl := range c.layers {
				if i >= len(res.Layers) {
					t.Fatalf("%d layers, want %d: %+v", len(res.Layers), len(c.layers), res.Layers)
				}
				l := res.Layers[i]
				if !strings.HasPrefix(l.Name, wl.prefix) || l.Op != wl.op || l.Role != wl.role || !strings.HasPrefix(l.Encoding, wl.enc) || l.Subgraph != wl.subgraph {
					t.Errorf("layer %d: %+v, want %+v", i, l, wl)
				}
				if ax, ok := axes[l.Name]; wl.axis != -2 && (!ok || ax != wl.axis) {
					t.Errorf("layer %s: DequantizeLinear axis %d (present %v), want %d", l.Name, ax, ok, wl.axis)
				}
				if l.BytesAfter >= l.BytesBefore {
					t.Errorf("layer %s: %d → %d bytes", l.Name, l.BytesBefore, l.BytesAfter)
				}
			}
			if len(res.Layers) != len(c.layers) {
				t.Errorf("%d layers, want %d", len(res.Layers), len(c.layers))
			}
			// No float tensor over 256 bytes is left in any graph.
			m := mustParse(t, out)
			var check func(g *graph)
			check = func(g *graph) {
				for _, in := range g.inits {
					if in.t.dataType == w.DTFloat && len(in.t.raw) > 256 {
						t.Errorf("float initializer %s (%d bytes) left", in.t.name, len(in.t.raw))
					}
				}
				for i := range g.nodes {
					n := &g.nodes[i]
					if a := n.attr("value"); n.opType == "Constant" && a != nil && a.hasT {
						if tt, _ := parseTensor(a.t); tt.dataType == w.DTFloat && len(tt.raw) > 256 {
							t.Errorf("float Constant %v (%d bytes) left", n.outputs, len(tt.raw))
						}
					}
					for _, at := range n.attrs {
						for _, sg := range at.graphs {
							check(sg.g)
						}
					}
				}
			}
			check(m.graph)
		})
	}
}

// A weight read both as a weight and otherwise stays float, with the
// reason in the report; a model whose only weights are like that fails
// with a clear error.
func TestNothingQuantizable(t *testing.T) {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 64)
	v := b.Weight("V", 0.1, 1, 64, 64)
	h := b.Op("MatMul", []string{x, v})
	b.Node("Add", []string{h, v}, []string{"Y"})
	b.Output("Y", 64, 64)
	_, _, err := Quantize(t.Context(), b.Model("other-use"), perChannel, nil)
	if err == nil || !strings.Contains(err.Error(), "no quantizable weights: all 1 weight tensors were kept (first: V_1: also used as input 1 of Add)") {
		t.Fatalf("err = %v", err)
	}
	b = testmodels.NewBuilder(17, 1)
	x = b.Input("X", -1, 64)
	b.Node("Relu", []string{x}, []string{"Y"})
	b.Output("Y", -1, 64)
	_, _, err = Quantize(t.Context(), b.Model("no-weights"), perChannel, nil)
	if err == nil || !strings.Contains(err.Error(), "no quantizable weights: no float initializer or Constant") {
		t.Fatalf("err = %v", err)
	}
}
