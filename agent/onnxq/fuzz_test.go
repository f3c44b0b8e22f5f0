package onnxq

import (
	"bytes"
	"context"
	"errors"
	"testing"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

// tinyModels are small enough for the fuzzer to mutate quickly while still
// covering every op, opset branch, Constant weights and subgraphs.
func tinyModels() [][]byte {
	var out [][]byte
	for _, opset := range []int64{9, 11, 17} {
		for _, constW := range []bool{false, true} {
			b := testmodels.NewBuilder(opset, 3)
			b.ConstWeights = constW
			x := b.Input("X", -1, 8)
			h := b.Op("MatMul", []string{x, b.Weight("W", 0.3, 1, 8, 8)})
			h = b.Op("Gemm", []string{h, b.Weight("G", 0.3, 0, 4, 8)}, w.Attr{Name: "transB", Type: w.AttrTypeInt, I: 1})
			// An If whose branches capture a weight from the outer scope.
			sub := testmodels.NewBuilder(opset, 4)
			sub.Node("Identity", []string{h}, []string{"then_out"})
			sub.Output("then_out", -1, 4)
			cond := b.Input("C")
			b.Node("If", []string{cond}, []string{"Y"},
				w.Attr{Name: "then_branch", Type: w.AttrTypeGraph, G: sub.GraphBytes("then")},
				w.Attr{Name: "else_branch", Type: w.AttrTypeGraph, G: sub.GraphBytes("else")})
			b.Output("Y", -1, 4)
			out = append(out, b.Model("tiny"))
		}
	}
	// Weights in a Loop body, and weights sliced into an LSTM inside If
	// bodies.
	out = append(out, testmodels.LoopModel(17, 3), testmodels.SlicedLSTMModel(17, 3))
	b := testmodels.NewBuilder(11, 5)
	x := b.Input("X", -1, 2, 4, 4)
	h := b.Op("Conv", []string{x, b.Weight("K", 0.3, 0, 3, 2, 2, 2)})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 3, 3, 3)
	return append(out, b.Model("tinyconv"))
}

func FuzzReadModel(f *testing.F) {
	for _, m := range tinyModels() {
		f.Add(m)
		f.Add(m[:len(m)/2])
		f.Add(m[:len(m)-3])
		for _, pos := range []int{3, len(m) / 3, len(m) / 2, len(m) - 10} {
			flipped := bytes.Clone(m)
			flipped[pos] ^= 0x40
			f.Add(flipped)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("not a model"))
	f.Add(testmodels.MatMulModel(17, 1)[:4000])

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseModel(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("parse error does not wrap ErrInvalidModel: %v", err)
			}
			return
		}
		var buf bytes.Buffer
		layout(m, nil).WriteTo(&buf)
		if _, err := parseModel(buf.Bytes()); err != nil {
			t.Fatalf("re-serialized model does not parse: %v", err)
		}
		for _, opts := range []Options{
			{Mode: ModeInt8, PerChannel: true, MinElements: 1},
			{Mode: ModeInt8, MinElements: 1},
			{Mode: ModeFP16, MinElements: 1},
		} {
			out, res, err := Quantize(context.Background(), data, opts, nil)
			if err != nil {
				if !errors.Is(err, ErrInvalidModel) {
					t.Fatalf("%s: error does not wrap ErrInvalidModel: %v", opts.Mode, err)
				}
				continue
			}
			if res.TensorsQuantized == 0 {
				t.Fatalf("%s: success without quantizing anything", opts.Mode)
			}
			if _, err := parseModel(out); err != nil {
				t.Fatalf("%s: output does not parse: %v", opts.Mode, err)
			}
		}
	})
}

// The fuzz seeds must reach the quantizer, not just the reader.
func TestTinyModelsQuantize(t *testing.T) {
	for i, m := range tinyModels() {
		for _, opts := range []Options{{PerChannel: true, MinElements: 1}, {MinElements: 1}, {Mode: ModeFP16, MinElements: 1}} {
			out, res, err := Quantize(context.Background(), m, opts, nil)
			if err != nil {
				t.Fatalf("tiny model %d %+v: %v", i, opts, err)
			}
			if res.TensorsQuantized == 0 {
				t.Fatalf("tiny model %d: nothing quantized", i)
			}
			if _, err := parseModel(out); err != nil {
				t.Fatal(err)
			}
		}
	}
}
