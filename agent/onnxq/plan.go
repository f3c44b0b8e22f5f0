package onnxq

import (
	"fmt"
	"math"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// Encodings a tensor can end up in (Layer.Encoding).
const (
	encInt8     = "int8"
	encInt8Asym = "int8 asymmetric"
	encFP16     = "fp16"
	encFloat    = "float"
)

// minHalfElements is the smallest tensor worth storing as fp16 outside the
// weights: below it the Cast node costs more than the halved data saves.
const minHalfElements = 16

// maxTraceDepth bounds how many data-movement ops plan follows from a
// tensor to its consumers.
const maxTraceDepth = 16

// role is what a tensor is used as, over all its (traced) uses.
type role int

const (
	roleNone   role = iota
	roleWeight      // only weight inputs: quantize to int8 (or fp16 in fp16 mode)
	roleBias        // only bias inputs of Conv/ConvTranspose/Gemm/RNNs: fp16
	roleOther       // anything else
)

func (r role) String() string {
	switch r {
	case roleWeight:
		return "weight"
	case roleBias:
		return "bias"
	case roleOther:
		return "other"
	}
	return "none"
}

// cand is a float tensor (an initializer or a Constant node, in any graph)
// and what plan decided for it.
type cand struct {
	name   string
	g      *graph
	init   int // index into g.inits, or -1
	constN int // index into g.nodes of the Constant producing it, or -1
	t      tensor
	n      int64 // elements

	role  role
	op    string // the op type of the first consumer (through data movement)
	axis  int    // channel axis for per-channel scales, -1 for one scale
	other string // the first use that is not a weight or bias input
	// halfOK: every use tolerates fp16 rounding (weights, biases and the
	// arithmetic ops of halfSafeOps).
	halfOK bool

	enc  string // target encoding, encFloat = keep
	kept string // why the tensor stays in higher precision than its role's target
}

// weightAxis reports whether input in of n is a weight input the quantizer
// handles, and along which axis of a tensor of the given rank the output
// channels (or, for Gather, the rows) run; -1 = none, one scale. With rank
// < 0 (unknown: the tensor reached n through data movement) only the input
// slot is checked.
func weightAxis(n *node, in, rank int) (bool, int) {
	known := rank >= 0
	switch n.opType {
	case "Conv":
		return in == 1 && (!known || rank >= 3), 0
	case "ConvTranspose":
		// W is [C_in, C_out/group, k...]: output channels on axis 1.
		return in == 1 && (!known || rank >= 3), 1
	case "MatMul":
		// B is [..., K, N]: output channels are the last axis.
		return in == 1 && (!known || rank >= 2), rank - 1
	case "Gemm":
		if in != 1 || known && rank != 2 {
			return false, 0
		}
		if a := n.attr("transB"); a != nil && a.hasI && a.i != 0 {
			return true, 0
		}
		return true, 1
	case "LSTM", "GRU", "RNN":
		// W and R are [directions, gates·hidden, input|hidden].
		return (in == 1 || in == 2) && (!known || rank == 3), 1
	case "Gather":
		// An embedding table: one scale per row (along the gathered axis).
		if in != 0 || known && rank < 1 {
			return false, 0
		}
		ax := 0
		if a := n.attr("axis"); a != nil && a.hasI {
			ax = int(a.i)
		}
		if ax < 0 {
			ax += rank
		}
		if !known || ax < 0 || ax >= rank || rank == 1 {
			return true, -1
		}
		return true, ax
	}
	return false, 0
}

// isBias reports whether input in of n is a bias.
func isBias(n *node, in int) bool {
	switch n.opType {
	case "Conv", "ConvTranspose", "Gemm":
		return in == 2
	case "LSTM", "GRU", "RNN":
		return in == 3
	}
	return false
}

// passThrough reports whether input in of n only moves data to n's
// outputs: a weight sliced, reshaped or concatenated on its way to the op
// that uses it (as exported RNNs do) is still a weight.
func passThrough(n *node, in int) bool {
	switch n.opType {
	case "Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Slice", "Split":
		return in == 0
	case "Concat":
		return true
	}
	return false
}

// halfSafeOps are ops whose float inputs may carry fp16 rounding (relative
// error 2^-11) without changing what the model computes beyond noise.
// Shape-like uses (Range, Resize, Cast to integers, ...) are not here.
var halfSafeOps = map[string]bool{
	"Add": true, "Sub": true, "Mul": true, "Div": true, "MatMul": true, "Gemm": true,
	"Conv": true, "ConvTranspose": true, "BatchNormalization": true, "InstanceNormalization": true,
	"LayerNormalization": true, "PRelu": true,
}

// usage accumulates the traced uses of one tensor.
type usage struct {
	weight, bias bool
	op           string
	axis         int // -2 unset; -1 conflicting or one scale
	direct       bool
	indirect     bool
	other        string
	halfOK       bool
}

// trace follows the uses of value name (of rank rank, -1 when it is
// unknown because data movement reshaped it).
func (m *model) trace(name string, rank int, u *usage, depth int) {
	if m.scope.outputs[name] > 0 {
		u.halfOK = false
		u.setOther("tensor is a graph output")
	}
	for _, us := range m.scope.uses[name] {
		n := &us.g.nodes[us.n]
		if !n.defaultDomain() {
			u.halfOK = false
			u.setOp(n.opType)
			u.setOther(fmt.Sprintf("also used as input %d of %s (domain %q)", us.in, n.opType, n.domain))
			continue
		}
		if ok, ax := weightAxis(n, us.in, rank); ok {
			u.weight = true
			u.setOp(n.opType)
			if depth > 0 {
				u.indirect = true
				continue
			}
			u.direct = true
			switch {
			case u.axis == -2:
				u.axis = ax
			case u.axis != ax:
				u.axis = -1 // consumers disagree on the channel axis: one scale
			}
			continue
		}
		if isBias(n, us.in) {
			u.bias = true
			u.setOp(n.opType)
			continue
		}
		if passThrough(n, us.in) && depth < maxTraceDepth {
			for _, o := range n.outputs {
				if o != "" {
					m.trace(o, -1, u, depth+1)
				}
			}
			continue
		}
		if !halfSafeOps[n.opType] {
			u.halfOK = false
		}
		u.setOp(n.opType)
		u.setOther(fmt.Sprintf("also used as input %d of %s", us.in, n.opType))
	}
}

func (u *usage) setOp(op string) {
	if u.op == "" {
		u.op = op
	}
}

func (u *usage) setOther(why string) {
	if u.other == "" {
		u.other = why
	}
}

// plan lists every float tensor of the model (initializers and Constant
// nodes, in every graph, in graph order) and decides what each becomes.
func plan(m *model, opts Options) []cand {
	var out []cand
	var walk func(g *graph)
	walk = func(g *graph) {
		inputs := make(map[string]bool, len(g.inputs))
		for _, in := range g.inputs {
			inputs[in] = true
		}
		for i := range g.inits {
			t := g.inits[i].t
			c := cand{name: t.name, g: g, init: i, constN: -1, t: t}
			if m.consider(&c, opts, inputs[t.name]) {
				out = append(out, c)
			}
		}
		for i := range g.nodes {
			n := &g.nodes[i]
			if n.defaultDomain() && n.opType == "Constant" && len(n.outputs) == 1 && n.outputs[0] != "" {
				a := n.attr("value")
				if a == nil || !a.hasT || len(n.attrs) != 1 {
					continue
				}
				t, err := parseTensor(a.t)
				if err != nil {
					continue // malformed Constant: not ours to judge, leave it alone
				}
				t.name = n.outputs[0]
				c := cand{name: t.name, g: g, init: -1, constN: i, t: t}
				if m.consider(&c, opts, false) {
					out = append(out, c)
				}
			}
			for _, a := range n.attrs {
				for _, sg := range a.graphs {
					walk(sg.g)
				}
			}
		}
	}
	walk(m.graph)
	return out
}

// consider fills in c's role and target encoding. It returns false for
// tensors the report need not mention: not float32, or neither weights nor
// small enough to store as fp16.
func (m *model) consider(c *cand, opts Options, isInput bool) bool {
	if c.t.dataType != w.DTFloat {
		return false
	}
	n, err := c.t.numElements(1 << 40)
	if err != nil {
		return false // reported by floats() if it ever gets decoded; not ours
	}
	c.n = n
	u := usage{axis: -2, halfOK: true}
	m.trace(c.name, len(c.t.dims), &u, 0)
	switch {
	case u.other != "":
		c.role = roleOther
	case u.weight:
		c.role = roleWeight
	case u.bias:
		c.role = roleBias
	default:
		return false // unused
	}
	c.op, c.other, c.halfOK, c.axis = u.op, u.other, u.halfOK, u.axis
	if u.indirect {
		// Data movement between the tensor and its weight input: the
		// consumer's channel axis says nothing about this tensor's. The
		// rows (axis 0) are the output units of the RNN and MatMul
		// weights exporters slice this way; a leading axis of 1 (an
		// RNN's directions) is skipped.
		rows := 0
		if len(c.t.dims) >= 3 && c.t.dims[0] == 1 {
			rows = 1
		}
		switch {
		case len(c.t.dims) < 2:
			c.axis = -1
		case !u.direct || c.axis == rows:
			c.axis = rows
		default:
			c.axis = -1
		}
	}
	if c.axis == -2 {
		c.axis = -1
	}
	c.enc = encFloat

	// Tensors that cannot change, whatever their use.
	switch {
	case c.t.external:
		c.kept = "external data"
	case m.scope.defs[c.name] > 1:
		c.kept = "name defined more than once"
	case isInput:
		c.kept = "initializer is also a graph input and may be overridden at run time"
	}
	if c.kept != "" {
		return c.role == roleWeight
	}
	switch c.role {
	case roleWeight:
		switch {
		case n < int64(opts.MinElements):
			c.enc = encFP16
			c.kept = fmt.Sprintf("%d elements, below min_elements %d: fp16", n, opts.MinElements)
		case opts.Mode == ModeFP16:
			c.enc = encFP16
		default:
			c.enc = encInt8
		}
		return true
	case roleBias:
		if n >= minHalfElements {
			c.enc = encFP16
			return true
		}
		return false
	}
	// Other uses: small tensors read only by arithmetic may be fp16; a
	// weight that is also read otherwise stays float, and says why.
	if n >= minHalfElements && n < int64(opts.MinElements) && c.halfOK {
		c.enc = encFP16
		return true
	}
	if u.weight {
		c.role = roleWeight
		c.kept = c.other
		return true
	}
	return false
}

// halfSafe reports whether x survives fp16: finite, within fp16's range,
// and every value's rounding error at most 2^-10 of the tensor's largest
// magnitude (values far below the others may lose relative precision,
// which does not matter next to them; a tensor of only tiny values,
// an epsilon, does not qualify).
func halfSafe(x []float32) bool {
	var maxAbs float64
	for _, v := range x {
		maxAbs = max(maxAbs, math.Abs(float64(v)))
	}
	if math.IsNaN(maxAbs) || maxAbs > maxHalf {
		return false
	}
	for _, v := range x {
		if d := math.Abs(float64(float16ToFloat32(float32ToFloat16(v))) - float64(v)); d > maxAbs/1024 {
			return false
		}
	}
	return true
}

// Range of normal fp16 values.
const (
	minNormalHalf = 6.103515625e-05 // 2^-14
	maxHalf       = 65504
)
