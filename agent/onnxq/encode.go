package onnxq

import (
	"math"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// replacement is what a tensor turns into: new tensors (initializers of its
// graph, or Constant nodes) and nodes at the start of its graph that produce
// its name again.
type replacement struct {
	inits [][]byte // encoded TensorProtos: the graph's new initializers
	nodes [][]byte // encoded NodeProtos to put at the start of the graph
	stats tensorStats
}

func (r *replacement) bytes() int64 {
	var n int64
	for _, b := range r.inits {
		n += int64(len(b))
	}
	for _, b := range r.nodes {
		n += int64(len(b))
	}
	return n
}

// namer hands out short value names not used anywhere in the model: one
// or two characters for the first 3,900 (each is stored twice, where it is
// defined and where it is read). Added nodes have no names at all: the
// names are optional, and on small models long ones would eat into the 4×
// the weights save.
type namer struct {
	values map[string]bool
	next   int
}

const nameChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func (nm *namer) name() string {
	for {
		s := shortName(nm.next)
		nm.next++
		if !nm.values[s] {
			nm.values[s] = true
			return s
		}
	}
}

// shortName is the n-th name in bijective base 62: a, b, ..., 9, aa, ab, ...
func shortName(n int) string {
	var b []byte
	for ; ; n = n/len(nameChars) - 1 {
		b = append([]byte{nameChars[n%len(nameChars)]}, b...)
		if n < len(nameChars) {
			return string(b)
		}
	}
}

// encoder builds replacements for one candidate.
type encoder struct {
	c     *cand
	opset int64
	// inits: new tensors may be initializers. From IR version 4 any graph,
	// subgraphs included, may hold initializers that are not graph inputs:
	// that costs ~25 bytes less per tensor than a Constant node. Older
	// models keep Constant weights as Constants.
	inits bool
	nm    *namer
	r     replacement
}

// tensor stores t (named) as an initializer or a Constant node.
func (e *encoder) tensor(t w.Tensor) {
	if e.c.init >= 0 || e.inits {
		e.r.inits = append(e.r.inits, w.AppendTensor(make([]byte, 0, w.SizeTensor(t)), t))
		return
	}
	out := t.Name
	t.Name = ""
	e.r.nodes = append(e.r.nodes, w.AppendNode(nil, w.Node{
		OpType: "Constant", Outputs: []string{out},
		Attrs: []w.Attr{{Name: "value", Type: w.AttrTypeTensor, T: &t}},
	}))
}

func (e *encoder) node(op string, in []string, out string, attrs ...w.Attr) {
	e.r.nodes = append(e.r.nodes, w.AppendNode(nil, w.Node{OpType: op, Inputs: in, Outputs: []string{out}, Attrs: attrs}))
}

func (e *encoder) castToFloat(in, out string) {
	e.node("Cast", []string{in}, out, w.Attr{Name: "to", Type: w.AttrTypeInt, I: w.DTFloat})
}

// half stores x as fp16 and casts it back to float under the tensor's name.
func (e *encoder) half(x []float32) {
	raw := make([]byte, 2*len(x))
	var st errAcc
	for i, v := range x {
		h := float32ToFloat16(v)
		raw[2*i], raw[2*i+1] = byte(h), byte(h>>8)
		st.add(v, float16ToFloat32(h))
	}
	hn := e.nm.name()
	e.tensor(w.Tensor{Name: hn, Dims: e.c.t.dims, DataType: w.DTFloat16, Raw: raw})
	e.castToFloat(hn, e.c.name)
	e.r.stats = st.stats()
}

// halfScaleMin is the number of scales from which storing them as fp16
// (with a Cast) saves more than the Cast node costs.
const halfScaleMin = 16

// int8 stores x quantized, and the nodes that dequantize it under the
// tensor's name: DequantizeLinear where the opset has it (per channel from
// 13, per tensor from 10), else Cast and Mul by a scale shaped to broadcast
// along the channel axis, so the model's opset never changes.
func (e *encoder) int8(x []float32, opts Options) string {
	c := e.c
	axis := c.axis
	if !opts.PerChannel {
		axis = -1
	}
	useDQ := e.opset >= 13 || (e.opset >= 10 && axis < 0)
	_, ch, _ := split(c.t.dims, axis, len(x))
	pr := int8Params{
		axis: axis, sumAxis: c.axis, sum: opts.Rounding == RoundSum,
		asym: opts.Asymmetric && useDQ, halfScal: ch >= halfScaleMin,
		codeScal: useDQ && ch >= halfScaleMin,
	}
	qt := quantizeInt8(x, c.t.dims, pr)
	if !opts.Asymmetric && !opts.Symmetric && useDQ {
		// Automatic zero points: only where they measurably cut the
		// weight's reconstruction error (skewed channels); each costs a
		// byte per channel.
		pr.asym = true
		if qa := quantizeInt8(x, c.t.dims, pr); qa.stats.snr-qt.stats.snr >= asymMinGainDB {
			qt = qa
		}
	}
	e.r.stats = qt.stats
	qn := e.nm.name()
	e.tensor(w.Tensor{Name: qn, Dims: c.t.dims, DataType: w.DTInt8, Raw: qt.q})

	// The scale as DequantizeLinear or Mul wants it: a float32 tensor,
	// possibly from an fp16 one through a Cast.
	var sdims []int64 // scalar for one scale
	switch {
	case axis >= 0 && useDQ:
		sdims = []int64{int64(ch)}
	case axis >= 0:
		sdims = make([]int64, len(c.t.dims))
		for i := range sdims {
			sdims[i] = 1
		}
		sdims[axis] = c.t.dims[axis]
	}
	sn := e.nm.name()
	switch {
	case qt.codes != nil:
		cn, stn := e.nm.name(), e.nm.name()
		u := math.Float32bits(qt.codeStep)
		e.tensor(w.Tensor{Name: cn, Dims: sdims, DataType: w.DTUint8, Raw: qt.codes})
		e.tensor(w.Tensor{Name: stn, DataType: w.DTFloat, Raw: []byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)}})
		e.node("DequantizeLinear", []string{cn, stn}, sn)
	case qt.half:
		raw := make([]byte, 0, 2*len(qt.scales))
		for _, s := range qt.scales {
			h := float32ToFloat16(s) // exact: the scales are fp16 values
			raw = append(raw, byte(h), byte(h>>8))
		}
		hn := e.nm.name()
		e.tensor(w.Tensor{Name: hn, Dims: sdims, DataType: w.DTFloat16, Raw: raw})
		e.castToFloat(hn, sn)
	default:
		raw := make([]byte, 0, 4*len(qt.scales))
		for _, s := range qt.scales {
			u := math.Float32bits(s)
			raw = append(raw, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
		}
		e.tensor(w.Tensor{Name: sn, Dims: sdims, DataType: w.DTFloat, Raw: raw})
	}

	if !useDQ {
		fn := e.nm.name()
		e.castToFloat(qn, fn)
		e.node("Mul", []string{fn, sn}, c.name)
		return encInt8
	}
	in := []string{qn, sn}
	enc := encInt8
	if qt.zps != nil {
		zn := e.nm.name()
		raw := make([]byte, len(qt.zps))
		for i, z := range qt.zps {
			raw[i] = byte(z)
		}
		e.tensor(w.Tensor{Name: zn, Dims: sdims, DataType: w.DTInt8, Raw: raw})
		in = append(in, zn)
		enc = encInt8Asym
	}
	var attrs []w.Attr
	if axis >= 0 {
		attrs = []w.Attr{{Name: "axis", Type: w.AttrTypeInt, I: int64(axis)}}
	}
	// Without a zero point DequantizeLinear takes 0 for int8 input: the
	// symmetric case needs no zero-point tensor.
	e.node("DequantizeLinear", in, c.name, attrs...)
	return enc
}

// asymMinGainDB is the weight SNR gain (measured on the weight itself, data
// free) from which a tensor gets zero points automatically. On Silero VAD's
// skewed encoder convolutions and LSTM weights it is 1.2–4.6 dB, which
// keeps every frame's decision; on near-symmetric STFT bases ~0.1 dB.
const asymMinGainDB = 1.0
