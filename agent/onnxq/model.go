package onnxq

import (
	"errors"
	"fmt"
	"io"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// maxGraphDepth bounds recursion into If/Loop/Scan bodies so hostile input
// cannot exhaust the stack.
const maxGraphDepth = 64

// model is a parsed ModelProto. Everything references the input buffer; only
// what the quantizer needs is decoded.
type model struct {
	data     []byte
	fields   []w.Field
	graphIdx int   // index of the graph field in fields
	opset    int64 // default-domain opset, 0 if absent
	ir       int64 // ir_version
	graph    *graph
	scope    scope
}

// graph is a parsed GraphProto: the top-level graph or a subgraph (an
// attribute of an If, Loop or Scan node), with its own subgraphs parsed too.
type graph struct {
	fields []w.Field
	nodes  []node
	inits  []initializer
	inputs []string
	output []string
	depth  int // 0 for the model's graph
}

// scope holds what the quantizer needs to know about names across the whole
// model, every subgraph included: a subgraph reads values of the graphs
// around it by name.
type scope struct {
	// names holds every value name, so new names can be chosen without
	// collisions.
	names map[string]bool
	// defs counts the definitions of each value name (initializers, node
	// outputs, graph inputs) in all graphs.
	defs map[string]int
	// uses lists where each value is read.
	uses map[string][]use
	// outputs counts graph outputs (any graph) by name.
	outputs map[string]int
}

// use is one read of a value: input in of node n of graph g.
type use struct {
	g  *graph
	n  int
	in int
}

type node struct {
	fieldIdx int
	fields   []w.Field // the node's own fields, to re-encode it when a subgraph changes
	inputs   []string
	outputs  []string
	name     string
	opType   string
	domain   string
	attrs    []attr
}

type attr struct {
	fieldIdx int       // index in node.fields
	fields   []w.Field // the attribute's own fields
	name     string
	i        int64
	hasI     bool
	t        []byte // encoded TensorProto of attribute field t
	hasT     bool
	graphs   []subgraph
}

// subgraph is a parsed graph attribute value and where it sits in the
// attribute's fields.
type subgraph struct {
	fieldIdx int
	g        *graph
}

type initializer struct {
	fieldIdx int
	t        tensor
}

type tensor struct {
	name        string
	dims        []int64
	dataType    int64
	raw         []byte
	hasRaw      bool
	floatFields []w.Field // float_data occurrences (packed or not)
	external    bool
}

func (n *node) defaultDomain() bool { return n.domain == "" || n.domain == "ai.onnx" }

func (n *node) attr(name string) *attr {
	for i := range n.attrs {
		if n.attrs[i].name == name {
			return &n.attrs[i]
		}
	}
	return nil
}

// parseErr turns a wire-level error into an ErrInvalidModel one naming what
// looks wrong: running off the end almost always means a truncated file.
func parseErr(what string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return invalidf("%s: file is truncated or not protobuf: %v", what, err)
	}
	return invalidf("%s: not a protobuf message: %v", what, err)
}

func parseModel(data []byte) (*model, error) {
	if len(data) == 0 {
		return nil, invalidf("empty file")
	}
	fields, err := w.Split(data)
	if err != nil {
		return nil, parseErr("model", err)
	}
	m := &model{data: data, fields: fields, graphIdx: -1}
	for i, f := range fields {
		switch f.Num {
		case w.ModelIRVersion:
			m.ir = int64(f.Value)
		case w.ModelGraph:
			if f.Type != protowireBytes {
				return nil, invalidf("model: graph field has wrong wire type: not an ONNX model")
			}
			if m.graphIdx >= 0 {
				return nil, invalidf("model: more than one graph field")
			}
			m.graphIdx = i
		case w.ModelOpsetImport:
			if f.Type != protowireBytes {
				return nil, invalidf("model: opset_import has wrong wire type: not an ONNX model")
			}
			domain, version, err := parseOpset(f.Bytes)
			if err != nil {
				return nil, err
			}
			if domain == "" || domain == "ai.onnx" {
				m.opset = version
			}
		}
	}
	if m.graphIdx < 0 {
		return nil, invalidf("not an ONNX model: no graph")
	}
	m.scope = scope{names: map[string]bool{}, defs: map[string]int{}, uses: map[string][]use{}, outputs: map[string]int{}}
	g, err := parseGraph(fields[m.graphIdx].Bytes, 0, &m.scope)
	if err != nil {
		return nil, err
	}
	m.graph = g
	return m, nil
}

func parseOpset(b []byte) (string, int64, error) {
	fs, err := w.Split(b)
	if err != nil {
		return "", 0, parseErr("opset_import", err)
	}
	var domain string
	var version int64
	for _, f := range fs {
		switch {
		case f.Num == w.OpsetDomain && f.Type == protowireBytes:
			domain = string(f.Bytes)
		case f.Num == w.OpsetVersion && f.Type == protowireVarint:
			version = int64(f.Value)
		}
	}
	return domain, version, nil
}

// parseGraph decodes a GraphProto and, recursively, its subgraphs,
// recording names, definitions and uses in sc.
func parseGraph(b []byte, depth int, sc *scope) (*graph, error) {
	if depth > maxGraphDepth {
		return nil, invalidf("subgraphs nested deeper than %d", maxGraphDepth)
	}
	fields, err := w.Split(b)
	if err != nil {
		return nil, parseErr("graph", err)
	}
	g := &graph{fields: fields, depth: depth}
	for i, f := range fields {
		if f.Type != protowireBytes {
			switch f.Num {
			case w.GraphNode, w.GraphInitializer, w.GraphInput, w.GraphOutput:
				return nil, invalidf("graph: field %d has wrong wire type", f.Num)
			}
			continue
		}
		switch f.Num {
		case w.GraphNode:
			n, err := parseNode(f.Bytes, depth, sc)
			if err != nil {
				return nil, err
			}
			n.fieldIdx = i
			for k, s := range n.inputs {
				sc.names[s] = true
				if s != "" {
					sc.uses[s] = append(sc.uses[s], use{g: g, n: len(g.nodes), in: k})
				}
			}
			for _, s := range n.outputs {
				sc.names[s] = true
				if s != "" {
					sc.defs[s]++
				}
			}
			g.nodes = append(g.nodes, n)
		case w.GraphInitializer:
			t, err := parseTensor(f.Bytes)
			if err != nil {
				return nil, err
			}
			sc.names[t.name] = true
			sc.defs[t.name]++
			g.inits = append(g.inits, initializer{fieldIdx: i, t: t})
		case w.GraphInput, w.GraphOutput, w.GraphValueInfo:
			name, err := valueInfoName(f.Bytes)
			if err != nil {
				return nil, err
			}
			sc.names[name] = true
			switch f.Num {
			case w.GraphInput:
				g.inputs = append(g.inputs, name)
			case w.GraphOutput:
				g.output = append(g.output, name)
				sc.outputs[name]++
			}
		}
	}
	// A graph input that is also an initializer is an overridable default,
	// not a second definition.
	inits := make(map[string]bool, len(g.inits))
	for _, in := range g.inits {
		inits[in.t.name] = true
	}
	for _, name := range g.inputs {
		if !inits[name] {
			sc.defs[name]++
		}
	}
	return g, nil
}

func valueInfoName(b []byte) (string, error) {
	fs, err := w.Split(b)
	if err != nil {
		return "", parseErr("value_info", err)
	}
	var name string
	for _, f := range fs {
		if f.Num == w.ValueInfoName && f.Type == protowireBytes {
			name = string(f.Bytes)
		}
	}
	return name, nil
}

func parseNode(b []byte, depth int, sc *scope) (node, error) {
	fs, err := w.Split(b)
	if err != nil {
		return node{}, parseErr("node", err)
	}
	n := node{fields: fs}
	for i, f := range fs {
		if f.Type != protowireBytes {
			continue
		}
		switch f.Num {
		case w.NodeInput:
			n.inputs = append(n.inputs, string(f.Bytes))
		case w.NodeOutput:
			n.outputs = append(n.outputs, string(f.Bytes))
		case w.NodeName:
			n.name = string(f.Bytes)
		case w.NodeOpType:
			n.opType = string(f.Bytes)
		case w.NodeDomain:
			n.domain = string(f.Bytes)
		case w.NodeAttribute:
			a, err := parseAttr(f.Bytes, depth, sc)
			if err != nil {
				return node{}, fmt.Errorf("node %q: %w", n.opType, err)
			}
			a.fieldIdx = i
			n.attrs = append(n.attrs, a)
		}
	}
	return n, nil
}

func parseAttr(b []byte, depth int, sc *scope) (attr, error) {
	fs, err := w.Split(b)
	if err != nil {
		return attr{}, parseErr("attribute", err)
	}
	a := attr{fields: fs}
	for i, f := range fs {
		switch {
		case f.Num == w.AttrName && f.Type == protowireBytes:
			a.name = string(f.Bytes)
		case f.Num == w.AttrI && f.Type == protowireVarint:
			a.i, a.hasI = int64(f.Value), true
		case f.Num == w.AttrT && f.Type == protowireBytes:
			a.t, a.hasT = f.Bytes, true
		case (f.Num == w.AttrG || f.Num == w.AttrGraphs) && f.Type == protowireBytes:
			g, err := parseGraph(f.Bytes, depth+1, sc)
			if err != nil {
				return attr{}, err
			}
			a.graphs = append(a.graphs, subgraph{fieldIdx: i, g: g})
		}
	}
	return a, nil
}

func parseTensor(b []byte) (tensor, error) {
	fs, err := w.Split(b)
	if err != nil {
		return tensor{}, parseErr("tensor", err)
	}
	var t tensor
	for _, f := range fs {
		switch f.Num {
		case w.TensorDims:
			if t.dims, err = w.Int64s(t.dims, f); err != nil {
				return tensor{}, parseErr("tensor dims", err)
			}
		case w.TensorDataType:
			t.dataType = int64(f.Value)
		case w.TensorName:
			t.name = string(f.Bytes)
		case w.TensorRawData:
			t.raw, t.hasRaw = f.Bytes, f.Type == protowireBytes
		case w.TensorFloatData:
			t.floatFields = append(t.floatFields, f)
		case w.TensorDataLocation:
			t.external = f.Value == w.DataLocationExternal
		case w.TensorExternalData:
			t.external = true
		}
	}
	return t, nil
}

// numElements returns the element count implied by dims, or an error for
// negative dims or overflow past limit.
func (t *tensor) numElements(limit int64) (int64, error) {
	n := int64(1)
	for _, d := range t.dims {
		if d < 0 {
			return 0, invalidf("tensor %q: negative dimension %d", t.name, d)
		}
		if d != 0 && n > limit/d {
			return 0, invalidf("tensor %q: dims %v larger than the file", t.name, t.dims)
		}
		n *= d
	}
	return n, nil
}

// floats decodes a float32 tensor's values into buf (reused when large
// enough).
func (t *tensor) floats(buf []float32) ([]float32, error) {
	n, err := t.numElements(1 << 40)
	if err != nil {
		return nil, err
	}
	buf = buf[:0]
	if t.hasRaw {
		if int64(len(t.raw)) != 4*n {
			return nil, invalidf("tensor %q: raw_data has %d bytes, dims %v need %d", t.name, len(t.raw), t.dims, 4*n)
		}
		if int64(cap(buf)) < n {
			buf = make([]float32, 0, n)
		}
		return w.AppendLEFloat32s(buf, t.raw), nil
	}
	for _, f := range t.floatFields {
		if buf, err = w.Float32s(buf, f); err != nil {
			return nil, parseErr(fmt.Sprintf("tensor %q float_data", t.name), err)
		}
	}
	if int64(len(buf)) != n {
		return nil, invalidf("tensor %q: float_data has %d values, dims %v need %d", t.name, len(buf), t.dims, n)
	}
	return buf, nil
}
