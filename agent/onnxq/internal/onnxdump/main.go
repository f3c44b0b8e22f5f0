// The onnxdump program prints an ONNX model's structure at the wire level:
// opsets, nodes per op type, and every float tensor (initializer or Constant,
// in any subgraph) with its size and consumers; -v lists every node. A
// debugging aid for onnxq:
//
//	go run ./agent/onnxq/internal/onnxdump [-v] model.onnx...
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

var verbose = flag.Bool("v", false, "list every node")

func main() {
	flag.Parse()
	for _, p := range flag.Args() {
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("== %s (%d bytes)\n", p, len(data))
		fs, _ := w.Split(data)
		for _, f := range fs {
			switch f.Num {
			case w.ModelOpsetImport:
				of, _ := w.Split(f.Bytes)
				var d string
				var v uint64
				for _, x := range of {
					if x.Num == 1 {
						d = string(x.Bytes)
					} else if x.Num == 2 {
						v = x.Value
					}
				}
				fmt.Printf("opset %q %d\n", d, v)
			case w.ModelIRVersion:
				fmt.Printf("ir %d\n", f.Value)
			case w.ModelGraph:
				ops := map[string]int{}
				graph(f.Bytes, "", ops)
				var ks []string
				for k := range ops {
					ks = append(ks, k)
				}
				sort.Strings(ks)
				for _, k := range ks {
					fmt.Printf("  op %s x%d\n", k, ops[k])
				}
			}
		}
	}
}

func graph(b []byte, ind string, ops map[string]int) {
	fs, _ := w.Split(b)
	uses := map[string][]string{}
	for _, f := range fs {
		if f.Num == w.GraphNode {
			nf, _ := w.Split(f.Bytes)
			var op string
			var ins []string
			for _, x := range nf {
				if x.Num == w.NodeOpType {
					op = string(x.Bytes)
				}
				if x.Num == w.NodeInput {
					ins = append(ins, string(x.Bytes))
				}
			}
			for i, in := range ins {
				uses[in] = append(uses[in], fmt.Sprintf("%s[%d]", op, i))
			}
		}
	}
	for _, f := range fs {
		switch f.Num {
		case w.GraphInitializer:
			fmt.Printf("%sinit %s\n", ind, tdesc(f.Bytes, "", uses))
		case w.GraphNode:
			nf, _ := w.Split(f.Bytes)
			var op, name string
			var outs []string
			for _, x := range nf {
				switch x.Num {
				case w.NodeOpType:
					op = string(x.Bytes)
				case w.NodeName:
					name = string(x.Bytes)
				case w.NodeOutput:
					outs = append(outs, string(x.Bytes))
				}
			}
			ops[op]++
			if *verbose {
				var ins []string
				for _, x := range nf {
					if x.Num == w.NodeInput {
						ins = append(ins, string(x.Bytes))
					}
				}
				fmt.Printf("%snode %s %q %v -> %v\n", ind, op, name, ins, outs)
			}
			for _, x := range nf {
				if x.Num != w.NodeAttribute {
					continue
				}
				af, _ := w.Split(x.Bytes)
				var an string
				for _, y := range af {
					if y.Num == w.AttrName {
						an = string(y.Bytes)
					}
				}
				for _, y := range af {
					if y.Num == w.AttrT && op == "Constant" && len(outs) == 1 {
						fmt.Printf("%sconst %s\n", ind, tdesc(y.Bytes, outs[0], uses))
					}
					if y.Num == w.AttrG || y.Num == w.AttrGraphs {
						fmt.Printf("%s%s %q attr %s:\n", ind, op, name, an)
						graph(y.Bytes, ind+"    ", ops)
					}
				}
			}
		}
	}
}

func tdesc(b []byte, name string, uses map[string][]string) string {
	tf, _ := w.Split(b)
	var dims []int64
	var dt uint64
	raw := 0
	for _, x := range tf {
		switch x.Num {
		case w.TensorDims:
			dims, _ = w.Int64s(dims, x)
		case w.TensorDataType:
			dt = x.Value
		case w.TensorName:
			if name == "" {
				name = string(x.Bytes)
			}
		case w.TensorRawData, w.TensorFloatData:
			raw += len(x.Raw)
		}
	}
	return fmt.Sprintf("%s dt=%d dims=%v bytes=%d uses=%s", name, dt, dims, raw, strings.Join(uses[name], ","))
}
