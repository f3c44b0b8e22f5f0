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
	graph    graph
}

type graph struct {
	fields []w.Field
	nodes  []node
	inits  []initializer
	inputs map[string]bool
	output map[string]bool
	// names holds every value name in the graph and its subgraphs, so new
	// names can be chosen without collisions.
	names map[string]bool
	// nodeNames holds node names for the same reason.
	nodeNames map[string]bool
	// subgraphUses are names read inside subgraphs (outer-scope captures).
	subgraphUses map[string]bool
}

type node struct {
	fieldIdx int
	inputs   []string
	outputs  []string
	name     string
	opType   string
	domain   string
	attrs    []attr
}

type attr struct {
	name   string
	i      int64
	hasI   bool
	t      []byte // encoded TensorProto of attribute field t
	hasT   bool
	graphs [][]byte
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
	g, err := parseGraph(fields[m.graphIdx].Bytes, 0, nil)
	if err != nil {
		return nil, err
	}
	m.graph = *g
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

// parseGraph decodes a GraphProto. For subgraphs (depth > 0) only names are
// collected, into top.
func parseGraph(b []byte, depth int, top *graph) (*graph, error) {
	if depth > maxGraphDepth {
		return nil, invalidf("subgraphs nested deeper than %d", maxGraphDepth)
	}
	fields, err := w.Split(b)
	if err != nil {
		return nil, parseErr("graph", err)
	}
	g := &graph{fields: fields}
	if top == nil {
		top = g
		g.inputs = map[string]bool{}
		g.output = map[string]bool{}
		g.names = map[string]bool{}
		g.nodeNames = map[string]bool{}
		g.subgraphUses = map[string]bool{}
	}
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
			n, err := parseNode(f.Bytes)
			if err != nil {
				return nil, err
			}
			n.fieldIdx = i
			for _, s := range n.inputs {
				top.names[s] = true
				if depth > 0 {
					top.subgraphUses[s] = true
				}
			}
			for _, s := range n.outputs {
				top.names[s] = true
			}
			top.nodeNames[n.name] = true
			for _, a := range n.attrs {
				for _, sb := range a.graphs {
					if _, err := parseGraph(sb, depth+1, top); err != nil {
						return nil, err
					}
				}
			}
			if depth == 0 {
				g.nodes = append(g.nodes, n)
			}
		case w.GraphInitializer:
			t, err := parseTensor(f.Bytes)
			if err != nil {
				return nil, err
			}
			top.names[t.name] = true
			if depth == 0 {
				g.inits = append(g.inits, initializer{fieldIdx: i, t: t})
			}
		case w.GraphInput, w.GraphOutput, w.GraphValueInfo:
			name, err := valueInfoName(f.Bytes)
			if err != nil {
				return nil, err
			}
			top.names[name] = true
			if depth == 0 && f.Num == w.GraphInput {
				g.inputs[name] = true
			}
			if depth == 0 && f.Num == w.GraphOutput {
				g.output[name] = true
			}
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

func parseNode(b []byte) (node, error) {
	fs, err := w.Split(b)
	if err != nil {
		return node{}, parseErr("node", err)
	}
	var n node
	for _, f := range fs {
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
			a, err := parseAttr(f.Bytes)
			if err != nil {
				return node{}, fmt.Errorf("node %q: %w", n.opType, err)
			}
			n.attrs = append(n.attrs, a)
		}
	}
	return n, nil
}

func parseAttr(b []byte) (attr, error) {
	fs, err := w.Split(b)
	if err != nil {
		return attr{}, parseErr("attribute", err)
	}
	var a attr
	for _, f := range fs {
		switch {
		case f.Num == w.AttrName && f.Type == protowireBytes:
			a.name = string(f.Bytes)
		case f.Num == w.AttrI && f.Type == protowireVarint:
			a.i, a.hasI = int64(f.Value), true
		case f.Num == w.AttrT && f.Type == protowireBytes:
			a.t, a.hasT = f.Bytes, true
		case (f.Num == w.AttrG || f.Num == w.AttrGraphs) && f.Type == protowireBytes:
			a.graphs = append(a.graphs, f.Bytes)
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
