package onnxq

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// Field numbers only the renamer needs.
const (
	graphQuantAnnotation protowire.Number = 14 // GraphProto.quantization_annotation
	graphSparseInit      protowire.Number = 15 // GraphProto.sparse_initializer
	annotationTensorName protowire.Number = 1  // TensorAnnotation.tensor_name
	sparseValues         protowire.Number = 1  // SparseTensorProto.values
)

// renamer gives every value of a model a short name, except the model's
// own inputs and outputs (its interface). Exporters name values after the
// module path that made them ("If_0_else_branch__Inline_0__/stft/padding/
// Constant_3_output_0"), and each name is stored where it is defined and
// again where it is read: on a model whose weights are int8 those strings
// are a real share of the file (Silero VAD: 6 % before, 20 % after
// quantization). Value names are not part of a model's contract (runtimes
// bind only the graph's inputs and outputs by name), so they are renamed
// consistently in every graph and subgraph; one map for the whole model
// keeps outer-scope reads from subgraphs right. Node names, which runtimes
// show in profiles and errors, are kept.
type renamer struct {
	keep    map[string]bool
	to      map[string]string
	next    int
	renamed int
}

// compactNames returns data with short value names (see renamer).
func compactNames(data []byte) ([]byte, int, error) {
	fs, err := w.Split(data)
	if err != nil {
		return nil, 0, err
	}
	r := &renamer{keep: map[string]bool{}, to: map[string]string{}}
	for _, f := range fs {
		if f.Num == w.ModelGraph && f.Type == protowire.BytesType {
			if err := r.keepInterface(f.Bytes); err != nil {
				return nil, 0, err
			}
		}
	}
	out := make([]byte, 0, len(data))
	for _, f := range fs {
		if f.Num != w.ModelGraph || f.Type != protowire.BytesType {
			out = append(out, f.Raw...)
			continue
		}
		g, err := r.graph(f.Bytes)
		if err != nil {
			return nil, 0, err
		}
		out = w.AppendBytes(out, f.Num, g)
	}
	return out, r.renamed, nil
}

// keepInterface records the main graph's input and output names.
func (r *renamer) keepInterface(g []byte) error {
	fs, err := w.Split(g)
	if err != nil {
		return err
	}
	for _, f := range fs {
		if (f.Num == w.GraphInput || f.Num == w.GraphOutput) && f.Type == protowire.BytesType {
			vfs, err := w.Split(f.Bytes)
			if err != nil {
				return err
			}
			for _, v := range vfs {
				if v.Num == w.ValueInfoName && v.Type == protowire.BytesType {
					r.keep[string(v.Bytes)] = true
				}
			}
		}
	}
	return nil
}

func (r *renamer) name(s string) string {
	if s == "" || r.keep[s] {
		return s
	}
	if n, ok := r.to[s]; ok {
		return n
	}
	for {
		n := shortName(r.next)
		r.next++
		if !r.keep[n] {
			r.to[s] = n
			if n != s {
				r.renamed++
			}
			return n
		}
	}
}

// message re-encodes msg, passing each field to f, which appends it (or
// its replacement) to out.
func message(msg []byte, f func(out []byte, fl w.Field) ([]byte, error)) ([]byte, error) {
	fs, err := w.Split(msg)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(msg))
	for _, fl := range fs {
		if out, err = f(out, fl); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// nameField renames a string field num of msg.
func (r *renamer) nameField(msg []byte, num protowire.Number) ([]byte, error) {
	return message(msg, func(out []byte, f w.Field) ([]byte, error) {
		if f.Num == num && f.Type == protowire.BytesType {
			return w.AppendString(out, f.Num, r.name(string(f.Bytes))), nil
		}
		return append(out, f.Raw...), nil
	})
}

// sub re-encodes embedded message field f with fn.
func sub(out []byte, f w.Field, fn func([]byte) ([]byte, error)) ([]byte, error) {
	b, err := fn(f.Bytes)
	if err != nil {
		return nil, err
	}
	return w.AppendBytes(out, f.Num, b), nil
}

func (r *renamer) graph(g []byte) ([]byte, error) {
	return message(g, func(out []byte, f w.Field) ([]byte, error) {
		if f.Type != protowire.BytesType {
			return append(out, f.Raw...), nil
		}
		switch f.Num {
		case w.GraphNode:
			return sub(out, f, r.node)
		case w.GraphInitializer:
			return sub(out, f, func(b []byte) ([]byte, error) { return r.nameField(b, w.TensorName) })
		case w.GraphInput, w.GraphOutput, w.GraphValueInfo:
			return sub(out, f, func(b []byte) ([]byte, error) { return r.nameField(b, w.ValueInfoName) })
		case graphQuantAnnotation:
			return sub(out, f, func(b []byte) ([]byte, error) { return r.nameField(b, annotationTensorName) })
		case graphSparseInit:
			return sub(out, f, func(b []byte) ([]byte, error) {
				return message(b, func(out []byte, f w.Field) ([]byte, error) {
					if f.Num == sparseValues && f.Type == protowire.BytesType {
						return sub(out, f, func(b []byte) ([]byte, error) { return r.nameField(b, w.TensorName) })
					}
					return append(out, f.Raw...), nil
				})
			})
		}
		return append(out, f.Raw...), nil
	})
}

func (r *renamer) node(n []byte) ([]byte, error) {
	return message(n, func(out []byte, f w.Field) ([]byte, error) {
		if f.Type != protowire.BytesType {
			return append(out, f.Raw...), nil
		}
		switch f.Num {
		case w.NodeInput, w.NodeOutput:
			return w.AppendString(out, f.Num, r.name(string(f.Bytes))), nil
		case w.NodeAttribute:
			return sub(out, f, r.attr)
		}
		return append(out, f.Raw...), nil
	})
}

func (r *renamer) attr(a []byte) ([]byte, error) {
	return message(a, func(out []byte, f w.Field) ([]byte, error) {
		if f.Type == protowire.BytesType && (f.Num == w.AttrG || f.Num == w.AttrGraphs) {
			b, err := sub(out, f, r.graph)
			if err != nil {
				return nil, fmt.Errorf("subgraph: %w", err)
			}
			return b, nil
		}
		return append(out, f.Raw...), nil
	})
}
