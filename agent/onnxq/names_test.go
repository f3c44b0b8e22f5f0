package onnxq

import (
	"slices"
	"testing"

	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

// ops lists every node's op type, subgraphs included, in file order.
func ops(g *graph) []string {
	var out []string
	for _, n := range g.nodes {
		out = append(out, n.opType)
		for _, a := range n.attrs {
			for _, sg := range a.graphs {
				out = append(out, ops(sg.g)...)
			}
		}
	}
	return out
}

// By default every value but the model's inputs and outputs gets a short
// name, in every subgraph, and nothing else changes; KeepNames keeps them.
// (ort_test.go and real_test.go run renamed models in ONNX Runtime: the
// If branches there read outer-scope values by their new names.)
func TestCompactNames(t *testing.T) {
	for name, data := range map[string][]byte{
		"if":   testmodels.IfConstModel(17, 1),
		"loop": testmodels.LoopModel(17, 1),
		"cnn":  testmodels.CNN(11, 1),
	} {
		t.Run(name, func(t *testing.T) {
			orig := mustParse(t, data)
			short, res := mustQuantize(t, data, Options{PerChannel: true})
			kept, resKept := mustQuantize(t, data, Options{PerChannel: true, KeepNames: true})
			ms, mk := mustParse(t, short), mustParse(t, kept)
			if !slices.Equal(ms.graph.inputs, orig.graph.inputs) || !slices.Equal(ms.graph.output, orig.graph.output) {
				t.Fatalf("interface renamed: inputs %v outputs %v, want %v %v", ms.graph.inputs, ms.graph.output, orig.graph.inputs, orig.graph.output)
			}
			iface := map[string]bool{}
			for _, n := range append(slices.Clone(orig.graph.inputs), orig.graph.output...) {
				iface[n] = true
			}
			for n := range ms.scope.names {
				if !iface[n] && len(n) > 2 {
					t.Errorf("value %q kept its long name", n)
				}
			}
			if res.ValuesRenamed == 0 || resKept.ValuesRenamed != 0 {
				t.Errorf("ValuesRenamed %d (default), %d (KeepNames)", res.ValuesRenamed, resKept.ValuesRenamed)
			}
			if len(short) >= len(kept) {
				t.Errorf("short names %d bytes, kept names %d", len(short), len(kept))
			}
			for n := range orig.scope.names {
				if !mk.scope.names[n] {
					t.Errorf("KeepNames: value %q is gone", n)
				}
			}
			if !slices.Equal(ops(ms.graph), ops(mk.graph)) || len(ms.scope.names) != len(mk.scope.names) {
				t.Errorf("renaming changed the graph: %d vs %d values", len(ms.scope.names), len(mk.scope.names))
			}
		})
	}
}
