package testmodels

import (
	"math"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// The graph shapes real exporters produce, beyond plain MatMul/Gemm/Conv:
// recurrent layers, weights sliced and concatenated on their way to them,
// weights inside If and Loop bodies, embedding tables, transposed
// convolutions. Every model has one float input X, so scripts/ort/verify.js
// can feed it.

// DTBool is TensorProto.BOOL.
const DTBool = 9

// InputT declares a graph input of any element type (subgraph inputs: a
// Loop body's iteration count and condition).
func (b *Builder) InputT(name string, elem int64, dims ...int64) string {
	b.inputs = append(b.inputs, valueInfoT(name, elem, dims))
	return name
}

// OutputT declares a graph output of any element type.
func (b *Builder) OutputT(name string, elem int64, dims ...int64) {
	b.output = append(b.output, valueInfoT(name, elem, dims))
}

func valueInfoT(name string, elem int64, dims []int64) []byte {
	var shape []byte
	for _, d := range dims {
		var dim []byte
		if d < 0 {
			dim = w.AppendString(dim, w.DimParam, "N")
		} else {
			dim = w.AppendVarint(dim, w.DimValue, d)
		}
		shape = w.AppendBytes(shape, w.ShapeDim, dim)
	}
	var tt []byte
	tt = w.AppendVarint(tt, w.TensorElemType, elem)
	tt = w.AppendBytes(tt, w.TensorShape, shape)
	var typ []byte
	typ = w.AppendBytes(typ, w.TypeTensorType, tt)
	var vi []byte
	vi = w.AppendString(vi, w.ValueInfoName, name)
	return w.AppendBytes(vi, w.ValueInfoType, typ)
}

// constant adds a Constant node holding a scalar or 1-D tensor of raw
// little-endian data and returns its output.
func (b *Builder) constant(dt int32, dims []int64, raw []byte) string {
	out := b.name("const")
	t := w.Tensor{Dims: dims, DataType: dt, Raw: raw}
	b.Node("Constant", nil, []string{out}, w.Attr{Name: "value", Type: w.AttrTypeTensor, T: &t})
	return out
}

func (b *Builder) boolConst(v bool) string {
	raw := []byte{0}
	if v {
		raw[0] = 1
	}
	return b.constant(DTBool, nil, raw)
}

func (b *Builder) int64Const(vals ...int64) string {
	raw := make([]byte, 0, 8*len(vals))
	for _, v := range vals {
		for k := 0; k < 8; k++ {
			raw = append(raw, byte(uint64(v)>>(8*k)))
		}
	}
	return b.constant(w.DTInt64, []int64{int64(len(vals))}, raw)
}

func graphAttr(name string, g []byte) w.Attr {
	return w.Attr{Name: name, Type: w.AttrTypeGraph, G: g}
}

// sub returns a builder for a subgraph whose weights come from the same
// random stream; names stay unique across the model because the sequence
// counter is shared.
func (b *Builder) sub() *Builder {
	return &Builder{Opset: b.Opset, ConstWeights: b.ConstWeights, rng: b.rng, seqp: b.seqRef()}
}

// RNNModel: X[5,N,32] → LSTM(hidden 48, W/R/B initializers) → Reshape →
// GRU(hidden 40, W through an Identity) → Y_h[1,N,40].
func RNNModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", 5, -1, 32)
	const h1, h2 = 48, 40
	lw := b.Weight("lstm_W", 1/math.Sqrt(32), 1, 1, 4*h1, 32)
	lr := b.Weight("lstm_R", 1/math.Sqrt(h1), 1, 1, 4*h1, h1)
	lb := b.bias(8 * h1)
	lb2 := b.name("lstm_B")
	b.Node("Reshape", []string{lb, b.Int64Init(b.name("bshape"), 1, 8*h1)}, []string{lb2})
	y := b.name("lstm_Y")
	b.Node("LSTM", []string{x, lw, lr, lb2}, []string{y}, intAttr("hidden_size", h1))
	y = b.Op("Reshape", []string{y, b.Int64Init(b.name("yshape"), 5, -1, h1)})
	// The GRU's W reaches it through an Identity, as weights do after
	// some exporters' graph surgery.
	gw := b.Op("Identity", []string{b.Weight("gru_W", 1/math.Sqrt(h1), 1, 1, 3*h2, h1)})
	gr := b.Weight("gru_R", 1/math.Sqrt(h2), 1, 1, 3*h2, h2)
	b.Node("GRU", []string{y, gw, gr}, []string{"", "Y"}, intAttr("hidden_size", h2))
	b.Output("Y", 1, -1, h2)
	return b.Model("rnn")
}

// SlicedLSTMModel is how PyTorch's LSTM reaches ONNX inside scripted
// control flow (Silero VAD): the float weight_ih [4H, I], weight_hh [4H, H]
// and bias [8H] are top-level initializers, read by two If bodies (taken on
// conditions that hold for any input, one branch each) that slice them into
// gates, concatenate the gates in ONNX's order, unsqueeze, and run an LSTM.
// Both bodies share the same three tensors.
func SlicedLSTMModel(opset int64, seed uint64) []byte {
	const hid, in = 32, 24
	b := NewBuilder(opset, seed)
	x := b.Input("X", 4, -1, in)
	wih := b.Weight("weight_ih", 1/math.Sqrt(in), 0, 4*hid, in)
	whh := b.Weight("weight_hh", 1/math.Sqrt(hid), 0, 4*hid, hid)
	bias := b.bias(8 * hid)
	axes0 := b.Int64Init(b.name("axes0"), 0)
	cut := func(g *Builder, t string, k int64, size int64) string {
		return g.Op("Slice", []string{t, g.int64Const(k * size), g.int64Const((k + 1) * size), axes0})
	}
	branch := func(name string, order []int64) []byte {
		g := b.sub()
		lstmIn := func(t string, size int64) string {
			parts := make([]string, len(order))
			for i, k := range order {
				parts[i] = cut(g, t, k, size)
			}
			return g.Op("Unsqueeze", []string{g.Op("Concat", parts, intAttr("axis", 0)), axes0})
		}
		wi, wh := lstmIn(wih, hid), lstmIn(whh, hid)
		bb := lstmIn(bias, 2*hid) // whole [8H] in two halves, ordered too
		y := g.name("Y")
		yh := g.name("Y_h")
		g.Node("LSTM", []string{x, wi, wh, bb}, []string{y, yh}, intAttr("hidden_size", hid))
		g.OutputT(yh, w.DTFloat, 1, -1, hid)
		return g.GraphBytes(name)
	}
	order := []int64{0, 3, 1, 2}
	b.twoIfs(x, func(name string) []byte { return branch(name, order) }, func(name string) []byte { return branch(name, order) })
	b.Output("Y", 1, -1, hid)
	return b.Model("sliced_lstm")
}

// IfConstModel has every weight as a Constant node inside If branches, as
// an exporter that inlines functions per branch does (Silero VAD's 8/16 kHz
// model): X[N,64] → If(sum < big) → then: MatMul+Add+Relu+MatMul; else:
// Gemm. A second If takes its else branch, so both kinds of branch run.
func IfConstModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 64)
	thenG := func(name string) []byte {
		g := b.sub()
		g.ConstWeights = true
		h := g.Op("MatMul", []string{x, g.Weight("W", 1/math.Sqrt(64), 1, 64, 96)})
		h = g.Op("Relu", []string{g.Op("Add", []string{h, g.constBias(96)})})
		h = g.Op("MatMul", []string{h, g.Weight("W", 1/math.Sqrt(96), 1, 96, 32)})
		g.OutputT(h, w.DTFloat, -1, 32)
		return g.GraphBytes(name)
	}
	elseG := func(name string) []byte {
		g := b.sub()
		g.ConstWeights = true
		h := g.Op("Gemm", []string{x, g.Weight("W", 1/math.Sqrt(64), 0, 32, 64), g.constBias(32)}, intAttr("transB", 1))
		g.OutputT(h, w.DTFloat, -1, 32)
		return g.GraphBytes(name)
	}
	b.twoIfs(x, thenG, elseG)
	b.Output("Y", -1, 32)
	return b.Model("if_const")
}

// twoIfs adds Y = If(sum(x) < 1e30) + If(sum(x) > 1e30), both with the
// branches thenG and elseG build: the first If takes its then branch, the
// second its else branch, whatever the input.
func (b *Builder) twoIfs(x string, thenG, elseG func(name string) []byte) {
	s := b.Op("ReduceSum", []string{x}, intAttr("keepdims", 0))
	big := b.Tensor(b.name("big"), nil, []float32{1e30})
	outs := make([]string, 2)
	for i, cond := range []string{b.Op("Less", []string{s, big}), b.Op("Greater", []string{s, big})} {
		outs[i] = b.name("if_out")
		b.Node("If", []string{cond}, []string{outs[i]},
			graphAttr("then_branch", thenG(b.name("then"))), graphAttr("else_branch", elseG(b.name("else"))))
	}
	b.Node("Add", outs, []string{"Y"})
}

// constBias is a bias as a Constant node (in subgraphs).
func (b *Builder) constBias(n int64) string { return b.biasAs(n, true) }

// LoopModel: h = X[N,64]; three times h = Tanh(MatMul(h, W)) with W a
// Constant inside the Loop body; Y = h.
func LoopModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 64)
	body := b.sub()
	body.ConstWeights = true
	iter := body.InputT(b.name("iter"), w.DTInt64)
	condIn := body.InputT(b.name("cond_in"), DTBool)
	hIn := body.InputT(b.name("h_in"), w.DTFloat, -1, 64)
	_ = iter
	h := body.Op("Tanh", []string{body.Op("MatMul", []string{hIn, body.Weight("W", 1.5/math.Sqrt(64), 1, 64, 64)})})
	condOut := body.Op("Identity", []string{condIn})
	body.OutputT(condOut, DTBool)
	body.OutputT(h, w.DTFloat, -1, 64)
	trip := b.constant(w.DTInt64, nil, []byte{3, 0, 0, 0, 0, 0, 0, 0})
	b.Node("Loop", []string{trip, b.boolConst(true), x}, []string{"Y"}, graphAttr("body", body.GraphBytes(b.name("body"))))
	b.Output("Y", -1, 64)
	return b.Model("loop")
}

// ScanModel: a Scan over the 5 rows of X[5,64] with state s (zeros at
// first): s = Tanh(MatMul(x_t, W) + s), W a Constant inside the body;
// Y = the final s.
func ScanModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", 5, 64)
	body := b.sub()
	body.ConstWeights = true
	sIn := body.InputT(b.name("s_in"), w.DTFloat, 64)
	xt := body.InputT(b.name("x_t"), w.DTFloat, 64)
	h := body.Op("MatMul", []string{xt, body.Weight("W", 1.5/math.Sqrt(64), 1, 64, 64)})
	sOut := body.Op("Tanh", []string{body.Op("Add", []string{h, sIn})})
	yt := body.Op("Identity", []string{sOut})
	body.OutputT(sOut, w.DTFloat, 64)
	body.OutputT(yt, w.DTFloat, 64)
	s0 := b.constant(w.DTFloat, []int64{64}, make([]byte, 4*64))
	b.Node("Scan", []string{s0, x}, []string{"Y", b.name("ys")},
		graphAttr("body", body.GraphBytes(b.name("body"))), intAttr("num_scan_inputs", 1))
	b.Output("Y", 64)
	return b.Model("scan")
}

// EmbeddingModel: the row of a [32,64] embedding table picked by
// ArgMax(X[N,32]) plus MatMul(X, W[32,64]) → Y[N,64].
func EmbeddingModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 32)
	idx := b.Op("ArgMax", []string{x}, intAttr("axis", 1), intAttr("keepdims", 0))
	e := b.Op("Gather", []string{b.Weight("embedding", 1, 0, 32, 64), idx}, intAttr("axis", 0))
	h := b.Op("MatMul", []string{x, b.Weight("W", 1/math.Sqrt(32), 1, 32, 64)})
	b.Node("Add", []string{e, h}, []string{"Y"})
	b.Output("Y", -1, 64)
	return b.Model("embedding")
}

// ConvTransposeModel: X[N,8,8,8] → ConvTranspose(W [8 in, 16 out, 3, 3],
// stride 2) + bias → Y[N,16,17,17].
func ConvTransposeModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 8, 8, 8)
	wt := b.Weight("deconv_W", 1/math.Sqrt(72), 1, 8, 16, 3, 3)
	b.Node("ConvTranspose", []string{x, wt, b.bias(16)}, []string{"Y"}, intsAttr("strides", 2, 2), intsAttr("kernel_shape", 3, 3))
	b.Output("Y", -1, 16, 17, 17)
	return b.Model("convtranspose")
}

// Shapes lists the graph-shape models (opset 17: Unsqueeze and Slice take
// their axes as inputs).
func Shapes() []Spec {
	return []Spec{
		{"rnn_opset17", 17, RNNModel, true},
		{"sliced_lstm_opset17", 17, SlicedLSTMModel, false},
		{"if_const_opset17", 17, IfConstModel, true},
		{"loop_opset17", 17, LoopModel, false},
		{"scan_opset17", 17, ScanModel, false},
		{"embedding_opset17", 17, EmbeddingModel, true},
		{"convtranspose_opset17", 17, ConvTransposeModel, false},
	}
}
