package onnxq

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

var perChannel = Options{Mode: ModeInt8, PerChannel: true}

// perChannelNamed keeps value names, for tests that find values by name.
var perChannelNamed = Options{Mode: ModeInt8, PerChannel: true, KeepNames: true}

func mustQuantize(t *testing.T, data []byte, opts Options) ([]byte, *Result) {
	t.Helper()
	out, res, err := Quantize(context.Background(), data, opts, nil)
	if err != nil {
		t.Fatalf("Quantize: %v", err)
	}
	return out, res
}

func mustParse(t *testing.T, data []byte) *model {
	t.Helper()
	m, err := parseModel(data)
	if err != nil {
		t.Fatalf("parseModel: %v", err)
	}
	return m
}

func opCount(m *model) map[string]int {
	c := map[string]int{}
	for _, n := range m.graph.nodes {
		c[n.opType]++
	}
	return c
}

func findInit(m *model, name string) *tensor {
	for i := range m.graph.inits {
		if m.graph.inits[i].t.name == name {
			return &m.graph.inits[i].t
		}
	}
	return nil
}

// producer returns the node of m's top graph that outputs name, or nil.
func producer(m *model, name string) *node {
	for i := range m.graph.nodes {
		for _, o := range m.graph.nodes[i].outputs {
			if o == name {
				return &m.graph.nodes[i]
			}
		}
	}
	return nil
}

// scaleOf returns the tensor behind a DequantizeLinear or Mul scale input:
// an fp16 initializer through a Cast, or a float one.
func scaleOf(t *testing.T, m *model, name string) *tensor {
	t.Helper()
	if c := producer(m, name); c != nil {
		if c.opType != "Cast" {
			t.Fatalf("scale %s made by %s", name, c.opType)
		}
		name = c.inputs[0]
	}
	s := findInit(m, name)
	if s == nil {
		t.Fatalf("no scale tensor %s", name)
	}
	return s
}

func weightsOf(cs []cand) []cand {
	var out []cand
	for _, c := range cs {
		if c.role == roleWeight {
			out = append(out, c)
		}
	}
	return out
}

func findNode(m *model, op string) *node {
	for i := range m.graph.nodes {
		if m.graph.nodes[i].opType == op {
			return &m.graph.nodes[i]
		}
	}
	return nil
}

// unchanged re-serializes a model through the same layout path the
// quantizer uses, with nothing replaced.
func unchanged(t *testing.T, data []byte) []byte {
	m := mustParse(t, data)
	var buf bytes.Buffer
	if _, err := layout(m, nil).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTripByteIdentical(t *testing.T) {
	for _, s := range testmodels.All() {
		data := s.Build(s.Opset, 1)
		if got := unchanged(t, data); !bytes.Equal(got, data) {
			t.Errorf("%s: read+write changed the bytes (%d → %d)", s.Name, len(data), len(got))
		}
	}
}

func TestAxisChoice(t *testing.T) {
	cases := []struct {
		name string
		data []byte
		axes []int
	}{
		{"gemm", testmodels.MLP(17, 1, false, false), []int{1, 1, 1}},
		{"gemm transB", testmodels.MLP(17, 1, true, false), []int{0, 0, 0}},
		{"matmul", testmodels.MatMulModel(17, 1), []int{1, 1}},
		{"conv", testmodels.CNN(17, 1), []int{0, 0, 0}}, // two Conv W, then Gemm transB
	}
	for _, c := range cases {
		ws := weightsOf(plan(mustParse(t, c.data), Options{MinElements: 1}))
		var axes []int
		for _, wt := range ws {
			axes = append(axes, wt.axis)
		}
		if len(axes) != len(c.axes) {
			t.Fatalf("%s: %d weights, want %d", c.name, len(axes), len(c.axes))
		}
		for i := range axes {
			if axes[i] != c.axes[i] {
				t.Errorf("%s: axes %v, want %v", c.name, axes, c.axes)
				break
			}
		}
	}
}

func TestInt8Opset17PerChannel(t *testing.T) {
	data := testmodels.MatMulModel(17, 1)
	out, res := mustQuantize(t, data, perChannel)
	if res.TensorsQuantized != 2 || res.TensorsSkipped != 0 || res.TensorsHalf != 1 {
		t.Fatalf("quantized %d skipped %d half %d, want 2/0/1 (the bias as fp16)", res.TensorsQuantized, res.TensorsSkipped, res.TensorsHalf)
	}
	m := mustParse(t, out)
	if m.opset != 17 {
		t.Errorf("opset %d", m.opset)
	}
	// Two DequantizeLinear; three Casts: two fp16 scales, the fp16 bias.
	if c := opCount(m); c["DequantizeLinear"] != 2 || c["Cast"] != 3 {
		t.Errorf("ops %v", c)
	}
	dq := findNode(m, "DequantizeLinear")
	if a := dq.attr("axis"); a == nil || a.i != 1 {
		t.Errorf("DequantizeLinear axis attr %+v, want 1", a)
	}
	// New nodes come first and have no names; the original weight name is
	// produced by DequantizeLinear.
	if m.graph.nodes[0].opType != "Cast" && m.graph.nodes[0].opType != "DequantizeLinear" {
		t.Errorf("first node %s, want a new one", m.graph.nodes[0].opType)
	}
	if dq.name != "" {
		t.Errorf("added node named %q", dq.name)
	}
	w0 := dq.outputs[0]
	if findInit(m, w0) != nil {
		t.Errorf("float initializer %s still present", w0)
	}
	q := findInit(m, dq.inputs[0])
	if q == nil || q.dataType != w.DTInt8 || len(q.raw) != 128*256 || len(q.name) > 4 {
		t.Fatalf("quantized initializer %+v", q)
	}
	// Symmetric: no zero point input; the scale is fp16 with a Cast.
	if len(dq.inputs) != 2 {
		t.Errorf("DequantizeLinear inputs %v, want no zero point", dq.inputs)
	}
	s := scaleOf(t, m, dq.inputs[1])
	if s.dataType != w.DTFloat16 || len(s.dims) != 1 || s.dims[0] != 256 {
		t.Errorf("scale %v dims %v, want fp16 [256]", s.dataType, s.dims)
	}
	if res.MaxAbsError <= 0 || res.MeanSNRdB < 35 || res.MeanSNRdB > 60 {
		t.Errorf("error figures max %g snr %g", res.MaxAbsError, res.MeanSNRdB)
	}
	if r := float64(len(out)) / float64(len(data)); r > 0.26 {
		t.Errorf("size ratio %.3f > 0.26", r)
	}
}

// TestHalfScalesRoundedUp: fp16 scales are rounded up before quantizing,
// so the largest weight of every channel still fits ±127 exactly or
// below, and the dequantized weights use the stored fp16 values.
func TestHalfScalesRoundedUp(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	dims := []int64{32, 40}
	x := make([]float32, 32*40)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 0.3)
	}
	qt := quantizeInt8(x, dims, int8Params{axis: 1, sumAxis: 1, sum: true, halfScal: true})
	if !qt.half {
		t.Fatal("scales not fp16")
	}
	for c, s := range qt.scales {
		if float16ToFloat32(float32ToFloat16(s)) != s {
			t.Fatalf("scale %d = %g is not an fp16 value", c, s)
		}
		var m float32
		for k := 0; k < 32; k++ {
			m = max(m, float32(math.Abs(float64(x[k*40+c]))))
		}
		if s < m/127 {
			t.Errorf("channel %d: scale %g below max/127 = %g: the largest weight would clip", c, s, m/127)
		}
	}
	// A scale below fp16's normal range keeps float32 scales.
	for i := range x {
		x[i] *= 1e-4
	}
	if qt := quantizeInt8(x, dims, int8Params{axis: 1, sumAxis: 1, halfScal: true}); qt.half {
		t.Error("tiny scales stored as fp16")
	}
}

// TestCodeScales: per-channel scales stored as uint8 codes times one step
// are rounded up (no weight clips), within 1/minScaleCode of the exact
// scale, exactly code·step in float32; a tensor whose scales span more
// than 255/minScaleCode keeps fp16 scales.
func TestCodeScales(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	dims := []int64{48, 30}
	x := make([]float32, 48*30)
	for i := range x {
		c := i % 30
		x[i] = float32(rng.NormFloat64() * 0.1 * (1 + float64(c)/40)) // scales span ~1.7×
	}
	for c := 0; c < 30; c += 7 { // some all-zero channels take any scale
		for k := 0; k < 48; k++ {
			x[k*30+c] = 0
		}
	}
	qt := quantizeInt8(x, dims, int8Params{axis: 1, sumAxis: 1, sum: true, halfScal: true, codeScal: true})
	if qt.codes == nil || qt.half {
		t.Fatalf("codes %v half %v, want codes", qt.codes != nil, qt.half)
	}
	for c, s := range qt.scales {
		if s != float32(qt.codes[c])*qt.codeStep {
			t.Fatalf("scale %d = %g, not code %d · step %g", c, s, qt.codes[c], qt.codeStep)
		}
		var m float64
		for k := 0; k < 48; k++ {
			m = max(m, math.Abs(float64(x[k*30+c])))
		}
		if m == 0 {
			continue
		}
		exact := float64(float32(m) / 127) // as quantizeInt8 computes it
		if float64(s) < exact || float64(s) > exact*(1+1.0/minScaleCode) {
			t.Errorf("channel %d: scale %g, exact %g: want rounded up by at most 1/%d", c, s, exact, minScaleCode)
		}
	}
	if qt.stats.snr < 40 {
		t.Errorf("SNR %.1f dB", qt.stats.snr)
	}
	// Scales spanning 1000×: the smallest would lose resolution.
	for k := 0; k < 48; k++ {
		x[k*30+1] *= 1e-3
	}
	if qt := quantizeInt8(x, dims, int8Params{axis: 1, sumAxis: 1, halfScal: true, codeScal: true}); qt.codes != nil {
		t.Error("scales spanning 1000× stored as codes")
	}
}

// TestAutoZeroPoints: by default a weight gets zero points when they raise
// its SNR by asymMinGainDB (skewed channels), not when its channels are
// symmetric.
func TestAutoZeroPoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	x := make([]float32, 256*64)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	sym := quantizeInt8(x, []int64{256, 64}, int8Params{axis: 1, sumAxis: 1, sum: true})
	asym := quantizeInt8(x, []int64{256, 64}, int8Params{axis: 1, sumAxis: 1, sum: true, asym: true})
	if asym.stats.snr-sym.stats.snr >= asymMinGainDB {
		t.Errorf("symmetric weights: zero points gain %.2f dB", asym.stats.snr-sym.stats.snr)
	}
	for i := range x {
		x[i] = float32(math.Abs(rng.NormFloat64())) // all positive: a filter bank
	}
	sym = quantizeInt8(x, []int64{256, 64}, int8Params{axis: 1, sumAxis: 1, sum: true})
	asym = quantizeInt8(x, []int64{256, 64}, int8Params{axis: 1, sumAxis: 1, sum: true, asym: true})
	if asym.stats.snr-sym.stats.snr < asymMinGainDB {
		t.Errorf("all-positive weights: zero points gain only %.2f dB", asym.stats.snr-sym.stats.snr)
	}
}

func TestOpset11PerChannelUsesCastMul(t *testing.T) {
	for _, c := range []struct {
		name  string
		data  []byte
		sdims [][]int64
	}{
		{"matmul", testmodels.MatMulModel(11, 1), [][]int64{{1, 256}, {1, 64}}},
		{"cnn", testmodels.CNN(11, 1), [][]int64{{16, 1, 1, 1}, {32, 1, 1, 1}, {10, 1}}},
	} {
		out, _ := mustQuantize(t, c.data, perChannel)
		m := mustParse(t, out)
		if m.opset != 11 {
			t.Errorf("%s: opset bumped to %d", c.name, m.opset)
		}
		ops := opCount(m)
		if ops["DequantizeLinear"] != 0 || ops["Mul"] != len(c.sdims) {
			t.Fatalf("%s: ops %v", c.name, ops)
		}
		i := 0
		for _, n := range m.graph.nodes {
			if n.opType != "Mul" {
				continue
			}
			if p := producer(m, n.inputs[0]); p == nil || p.opType != "Cast" || findInit(m, p.inputs[0]).dataType != w.DTInt8 {
				t.Errorf("%s: Mul %d input 0 is not Cast(int8)", c.name, i)
			}
			s := scaleOf(t, m, n.inputs[1])
			if !equalDims(s.dims, c.sdims[i]) {
				t.Errorf("%s: Mul %d scale dims %v, want %v", c.name, i, s.dims, c.sdims[i])
			}
			i++
		}
	}
}

func TestOpset11PerTensorUsesDQ(t *testing.T) {
	out, _ := mustQuantize(t, testmodels.MatMulModel(11, 1), Options{})
	m := mustParse(t, out)
	if ops := opCount(m); ops["DequantizeLinear"] != 2 || ops["Mul"] != 0 {
		t.Fatalf("ops %v", ops)
	}
	dq := findNode(m, "DequantizeLinear")
	if dq.attr("axis") != nil {
		t.Error("per-tensor DequantizeLinear has an axis")
	}
	if s := scaleOf(t, m, dq.inputs[1]); len(s.dims) != 0 || s.dataType != w.DTFloat {
		t.Errorf("per-tensor scale dims %v type %d, want a float scalar", s.dims, s.dataType)
	}
}

// TestAsymmetric: a zero point per channel where the opset allows it; on
// opset 11 per channel (Cast+Mul) the weights stay symmetric.
func TestAsymmetric(t *testing.T) {
	opts := Options{PerChannel: true, Asymmetric: true}
	out, res := mustQuantize(t, testmodels.MatMulModel(13, 1), opts)
	m := mustParse(t, out)
	dq := findNode(m, "DequantizeLinear")
	if len(dq.inputs) != 3 {
		t.Fatalf("DequantizeLinear inputs %v, want a zero point", dq.inputs)
	}
	if z := findInit(m, dq.inputs[2]); z == nil || z.dataType != w.DTInt8 || len(z.raw) != 256 {
		t.Fatalf("zero point %+v", z)
	}
	_, sym := mustQuantize(t, testmodels.MatMulModel(13, 1), perChannel)
	if res.MeanSNRdB < sym.MeanSNRdB {
		t.Errorf("asymmetric SNR %.2f dB below symmetric %.2f", res.MeanSNRdB, sym.MeanSNRdB)
	}
	for _, l := range res.Layers {
		if l.Op == "MatMul" && l.Encoding != encInt8Asym {
			t.Errorf("layer %s encoding %q", l.Name, l.Encoding)
		}
	}
	out, _ = mustQuantize(t, testmodels.MatMulModel(11, 1), opts)
	if ops := opCount(mustParse(t, out)); ops["DequantizeLinear"] != 0 {
		t.Errorf("opset 11 per channel: ops %v", ops)
	}

	// All-positive channels (a filter bank) get twice the resolution.
	x := make([]float32, 64*8)
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range x {
		x[i] = float32(rng.Float64())
	}
	a := quantizeInt8(x, []int64{64, 8}, int8Params{axis: 1, sumAxis: 1, asym: true})
	s := quantizeInt8(x, []int64{64, 8}, int8Params{axis: 1, sumAxis: 1})
	if a.stats.snr < s.stats.snr+5 {
		t.Errorf("positive weights: asymmetric SNR %.1f dB vs symmetric %.1f", a.stats.snr, s.stats.snr)
	}
}

func TestFP16(t *testing.T) {
	data := testmodels.MLP(17, 1, true, false)
	// KeepNames: the values are matched with the original's by name.
	out, res := mustQuantize(t, data, Options{Mode: ModeFP16, KeepNames: true})
	m := mustParse(t, out)
	// Three weights and the two biases of at least 16 elements.
	if res.TensorsQuantized != 3 || res.TensorsHalf != 2 || opCount(m)["Cast"] != 5 {
		t.Fatalf("quantized %d half %d, ops %v", res.TensorsQuantized, res.TensorsHalf, opCount(m))
	}
	var c *node
	for i := range m.graph.nodes {
		if n := &m.graph.nodes[i]; n.opType == "Cast" && len(findInit(m, n.inputs[0]).raw) > 1024 {
			c = n
			break
		}
	}
	if a := c.attr("to"); a == nil || a.i != w.DTFloat {
		t.Errorf("Cast to %+v", a)
	}
	h := findInit(m, c.inputs[0])
	if h == nil || h.dataType != w.DTFloat16 {
		t.Fatalf("fp16 initializer %+v", h)
	}
	// Check one value against the original.
	orig := findInit(mustParse(t, data), c.outputs[0])
	x, _ := orig.floats(nil)
	for i := 0; i < 100; i++ {
		got := float16ToFloat32(uint16(h.raw[2*i]) | uint16(h.raw[2*i+1])<<8)
		if math.Abs(float64(got-x[i])) > math.Abs(float64(x[i]))/1000 {
			t.Fatalf("value %d: %g vs %g", i, got, x[i])
		}
	}
	if res.MeanSNRdB < 60 {
		t.Errorf("fp16 SNR %g", res.MeanSNRdB)
	}
}

func TestConstantNodeWeights(t *testing.T) {
	data := testmodels.MLP(17, 1, false, true)
	in := mustParse(t, data)
	if findInit(in, "W_1") != nil || opCount(in)["Constant"] != 3 {
		t.Fatalf("test model does not use Constant weights: %v", opCount(in))
	}
	out, res := mustQuantize(t, data, perChannel)
	if res.TensorsQuantized != 3 {
		t.Fatalf("quantized %d", res.TensorsQuantized)
	}
	m := mustParse(t, out)
	// Each weight: int8 and fp16 scale initializers (IR >= 4 allows them
	// anywhere), a Cast and a DequantizeLinear; the float Constants are
	// gone.
	if ops := opCount(m); ops["Constant"] != 0 || ops["DequantizeLinear"] != 3 {
		t.Fatalf("ops %v", ops)
	}

	// Before IR 4 an initializer had to be a graph input too: Constant
	// weights stay Constants.
	ir3 := w.AppendVarint(nil, w.ModelIRVersion, 3)
	fs, _ := w.Split(data)
	for _, f := range fs[1:] {
		ir3 = append(ir3, f.Raw...)
	}
	out, _ = mustQuantize(t, ir3, perChannel)
	m = mustParse(t, out)
	if ops := opCount(m); ops["Constant"] != 6 || ops["DequantizeLinear"] != 3 {
		t.Fatalf("IR 3: ops %v, %d initializers", ops, len(m.graph.inits))
	}
	for _, n := range m.graph.nodes {
		if n.opType != "Constant" {
			continue
		}
		tt, err := parseTensor(n.attr("value").t)
		if err != nil || tt.dataType == w.DTFloat && len(tt.raw) > 4*256 {
			t.Errorf("Constant %v still holds a float weight", n.outputs)
		}
	}
	for _, in := range m.graph.inits {
		if in.t.dataType == w.DTInt8 {
			t.Errorf("IR 3: int8 initializer %s", in.t.name)
		}
	}
}

func TestSharedInitializerQuantizedOnce(t *testing.T) {
	out, res := mustQuantize(t, testmodels.SharedModel(17, 1), perChannel)
	if res.TensorsQuantized != 1 {
		t.Fatalf("quantized %d, want 1", res.TensorsQuantized)
	}
	m := mustParse(t, out)
	if ops := opCount(m); ops["DequantizeLinear"] != 1 || ops["MatMul"] != 2 {
		t.Fatalf("ops %v", ops)
	}
}

// A weight shared by a MatMul (channels on axis 1) and a Gemm with transB
// (axis 0) falls back to one scale for the whole tensor.
func TestSharedConflictingAxesPerTensor(t *testing.T) {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 64)
	wt := b.Weight("W", 0.1, 1, 64, 64)
	h := b.Op("MatMul", []string{x, wt})
	h = b.Op("Gemm", []string{h, wt}, w.Attr{Name: "transB", Type: w.AttrTypeInt, I: 1})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 64)
	out, _ := mustQuantize(t, b.Model("conflict"), perChannel)
	dq := findNode(mustParse(t, out), "DequantizeLinear")
	if dq == nil || dq.attr("axis") != nil {
		t.Fatalf("want a per-tensor DequantizeLinear, got %+v", dq)
	}
}

// weightModel builds X → MatMul(W big) → MatMul(V) → Y and lets the caller
// change V.
func weightModel(t *testing.T, edit func(b *testmodels.Builder, x, h string) string) []byte {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 64)
	h := b.Op("MatMul", []string{x, b.Weight("W", 0.1, 1, 64, 64)})
	h = edit(b, x, h)
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 64)
	return b.Model("edited")
}

func TestGraphInputInitializerSkipped(t *testing.T) {
	var v string
	data := weightModel(t, func(b *testmodels.Builder, x, h string) string {
		v = b.Weight("V", 0.1, 1, 64, 64)
		b.Input(v, 64, 64) // overridable at run time
		return b.Op("MatMul", []string{h, v})
	})
	out, res := mustQuantize(t, data, perChannelNamed)
	if res.TensorsQuantized != 1 || res.TensorsSkipped != 1 {
		t.Fatalf("quantized %d skipped %d, want 1/1", res.TensorsQuantized, res.TensorsSkipped)
	}
	vt := findInit(mustParse(t, out), v)
	if vt == nil || vt.dataType != w.DTFloat {
		t.Fatalf("graph-input initializer was changed: %+v", vt)
	}
}

func TestNonWeightUseSkipped(t *testing.T) {
	data := weightModel(t, func(b *testmodels.Builder, x, h string) string {
		v := b.Weight("V", 0.1, 1, 64, 64)
		h = b.Op("MatMul", []string{h, v})
		return b.Op("Add", []string{h, v}) // also a plain input elsewhere
	})
	_, res := mustQuantize(t, data, perChannel)
	if res.TensorsQuantized != 1 || res.TensorsSkipped != 1 {
		t.Fatalf("quantized %d skipped %d, want 1/1", res.TensorsQuantized, res.TensorsSkipped)
	}
	// Used as MatMul input A (not the weight) → also skipped.
	data = weightModel(t, func(b *testmodels.Builder, x, h string) string {
		v := b.Weight("V", 0.1, 1, 64, 64)
		h = b.Op("MatMul", []string{h, v})
		return b.Op("MatMul", []string{v, h})
	})
	if _, res = mustQuantize(t, data, perChannel); res.TensorsSkipped != 1 {
		t.Fatalf("skipped %d, want 1", res.TensorsSkipped)
	}
}

func TestFloatDataWeights(t *testing.T) {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 64)
	var tb []byte
	tb = w.AppendVarint(tb, w.TensorDims, 64)
	tb = w.AppendVarint(tb, w.TensorDims, 32)
	tb = w.AppendVarint(tb, w.TensorDataType, w.DTFloat)
	var packed []byte
	for i := 0; i < 64*32; i++ {
		u := math.Float32bits(float32(i%97) / 97)
		packed = append(packed, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	tb = w.AppendBytes(tb, w.TensorFloatData, packed)
	tb = w.AppendString(tb, w.TensorName, "FW")
	b.AddInitializer(tb)
	h := b.Op("MatMul", []string{x, "FW"})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 32)
	_, res := mustQuantize(t, b.Model("floatdata"), perChannel)
	if res.TensorsQuantized != 1 || res.MaxAbsError > 1.0/127 {
		t.Fatalf("%+v", res)
	}
}

func externalTensor(name string, dims ...int64) []byte {
	var tb []byte
	for _, d := range dims {
		tb = w.AppendVarint(tb, w.TensorDims, d)
	}
	tb = w.AppendVarint(tb, w.TensorDataType, w.DTFloat)
	tb = w.AppendString(tb, w.TensorName, name)
	var kv []byte
	kv = w.AppendString(kv, 1, "location")
	kv = w.AppendString(kv, 2, "weights.bin")
	tb = w.AppendBytes(tb, w.TensorExternalData, kv)
	return w.AppendVarint(tb, w.TensorDataLocation, w.DataLocationExternal)
}

func TestExternalDataRefused(t *testing.T) {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 64)
	b.AddInitializer(externalTensor("EW", 64, 64))
	b.AddInitializer(externalTensor("EV", 64, 64))
	h := b.Op("MatMul", []string{b.Op("MatMul", []string{x, "EW"}), "EV"})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 64)
	_, _, err := Quantize(context.Background(), b.Model("external"), perChannel, nil)
	if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), "external data is not supported") {
		t.Fatalf("err = %v", err)
	}

	// Mixed: the external one is skipped, the rest quantized.
	data := weightModel(t, func(b *testmodels.Builder, x, h string) string {
		b.AddInitializer(externalTensor("EV", 64, 64))
		return b.Op("MatMul", []string{h, "EV"})
	})
	out, res := mustQuantize(t, data, perChannelNamed)
	if res.TensorsQuantized != 1 || res.TensorsSkipped != 1 {
		t.Fatalf("quantized %d skipped %d", res.TensorsQuantized, res.TensorsSkipped)
	}
	if ev := findInit(mustParse(t, out), "EV"); ev == nil || !ev.external {
		t.Fatal("external initializer not kept as it was")
	}
}

func TestInvalidInputs(t *testing.T) {
	good := testmodels.MatMulModel(17, 1)
	noGraph := w.AppendVarint(nil, w.ModelIRVersion, 8)
	noGraph = w.AppendString(noGraph, 2, "x")
	cases := map[string]struct {
		data []byte
		msg  string
	}{
		"empty":         {nil, "empty"},
		"text":          {[]byte("this is not an onnx model at all, just text\n"), ""},
		"no graph":      {noGraph, "no graph"},
		"truncated 1/2": {good[:len(good)/2], "truncated"},
		"truncated -1":  {good[:len(good)-1], ""},
		"truncated 10":  {good[:10], "truncated"},
		"no weights":    {testmodels.MatMulModel(17, 1)[:0], ""},
		"only small":    {smallOnly(), "no quantizable weights"},
		"json":          {[]byte(`{"graph": {}}`), ""},
		"zeros":         {make([]byte, 100), ""},
	}
	for name, c := range cases {
		_, _, err := Quantize(context.Background(), c.data, perChannel, nil)
		if !errors.Is(err, ErrInvalidModel) {
			t.Errorf("%s: err = %v, want ErrInvalidModel", name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err %q does not mention %q", name, err, c.msg)
		}
	}
	// Files too.
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.onnx")
	os.WriteFile(p, good[:len(good)/3], 0o644)
	if _, err := QuantizeFile(context.Background(), p, p+".out", perChannel, nil); !errors.Is(err, ErrInvalidModel) {
		t.Errorf("truncated file: %v", err)
	}
	if _, err := os.Stat(p + ".out"); !os.IsNotExist(err) {
		t.Error("output written for a bad model")
	}
}

func smallOnly() []byte {
	b := testmodels.NewBuilder(17, 1)
	x := b.Input("X", -1, 8)
	h := b.Op("MatMul", []string{x, b.Weight("W", 0.1, 1, 8, 8)})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 8)
	return b.Model("small")
}

func TestMaxBytes(t *testing.T) {
	data := testmodels.MatMulModel(17, 1)
	_, _, err := Quantize(context.Background(), data, Options{MaxBytes: 1000}, nil)
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalidModel) {
		t.Fatalf("err = %v", err)
	}
	p := filepath.Join(t.TempDir(), "m.onnx")
	os.WriteFile(p, data, 0o644)
	if _, err := QuantizeFile(context.Background(), p, p+".q", Options{MaxBytes: 1000}, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("file err = %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	_, _, err := Quantize(context.Background(), nil, Options{Mode: "int4"}, nil)
	if !errors.Is(err, ErrBadOptions) {
		t.Fatalf("err = %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "m.onnx")
	out := filepath.Join(dir, "q.onnx")
	os.WriteFile(in, testmodels.MLP(17, 1, false, false), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := QuantizeFile(ctx, in, out, perChannel, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("pre-cancelled: %v", err)
	}
	// Cancel after the first tensor: the run stops before the next one.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var stages []string
	_, err := QuantizeFile(ctx, in, out, perChannel, func(p Progress) {
		stages = append(stages, p.Stage)
		if p.Stage == StageQuantize {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("mid-run: %v", err)
	}
	if strings.Join(stages, ",") != "read,quantize" {
		t.Errorf("stages %v", stages)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("output written despite cancellation")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left files behind: %v", ents)
	}
}

func TestProgressAndMetrics(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "m.onnx")
	data := testmodels.CNN(17, 1)
	os.WriteFile(in, data, 0o644)
	var ps []Progress
	res, err := QuantizeFile(context.Background(), in, in, perChannel, func(p Progress) { ps = append(ps, p) })
	if err != nil {
		t.Fatal(err)
	}
	// Read, one per tensor considered (3 weights, 2 biases; the last bias
	// has under 16 elements), write; Done moves by each tensor's bytes.
	// The 16-element bias stays float (smaller than fp16 with a Cast), so
	// the report has 4 layers.
	if len(ps) != 7 || len(res.Layers) != 4 || ps[0].Stage != StageRead || ps[1].Stage != StageQuantize || ps[6].Stage != StageWrite {
		t.Fatalf("progress %+v", ps)
	}
	for i, p := range ps {
		if p.Total != ps[0].Total || (i > 0 && p.Done <= ps[i-1].Done) || p.Done > p.Total {
			t.Errorf("progress %d: %+v", i, p)
		}
	}
	if ps[6].Done != ps[6].Total || ps[0].Done*20 > ps[0].Total {
		t.Errorf("progress %+v", ps)
	}
	st, _ := os.Stat(in)
	if res.SizeBefore != int64(len(data)) || res.SizeAfter != st.Size() {
		t.Errorf("sizes %d/%d, file %d", res.SizeBefore, res.SizeAfter, st.Size())
	}
	mt := res.Metrics()
	want := map[string]float64{
		"size_before": float64(res.SizeBefore), "size_after": float64(res.SizeAfter),
		"compression_ratio": res.CompressionRatio, "tensors_quantized": 3, "tensors_skipped": 0,
		"max_abs_error": res.MaxAbsError, "mean_snr_db": res.MeanSNRdB,
	}
	for _, k := range []string{"snr_db_min", "snr_db_worst_1", "snr_db_worst_3", "bytes_before_conv", "bytes_after_conv", "bytes_before_gemm", "bytes_after_gemm"} {
		if _, ok := mt[k]; !ok {
			t.Errorf("metric %s missing: %v", k, mt)
		}
	}
	if _, ok := mt["snr_db_worst_4"]; ok || mt["snr_db_min"] > mt["snr_db_worst_2"] || mt["bytes_after_conv"] >= mt["bytes_before_conv"] {
		t.Errorf("metrics %v", mt)
	}
	for k, v := range want {
		if mt[k] != v {
			t.Errorf("metric %s = %v, want %v", k, mt[k], v)
		}
	}
	if res.CompressionRatio < 3.3 {
		t.Errorf("compression ratio %g", res.CompressionRatio)
	}
	// In place: the output parses and is quantized.
	out, _ := os.ReadFile(in)
	if len(dqAxes(mustParse(t, out))) != 3 {
		t.Error("in-place output not quantized")
	}
}

func TestQuantizeInt8Exact(t *testing.T) {
	x := []float32{0, 127, -127, 63.5, 1, -1, 2, 0}
	qt := quantizeInt8(x, []int64{2, 4}, int8Params{axis: 0, sumAxis: 0})
	q, s, st := qt.q, qt.scales, qt.stats
	if s[0] != 1 || s[1] != float32(2)/127 {
		t.Errorf("scales %v", s)
	}
	if int8(q[1]) != 127 || int8(q[2]) != -127 || int8(q[3]) != 64 {
		t.Errorf("q %v", q)
	}
	if st.maxAbs > float64(s[0])/2+1e-6 {
		t.Errorf("max abs %g", st.maxAbs)
	}
	qt = quantizeInt8(make([]float32, 8), []int64{8}, int8Params{axis: -1, sumAxis: -1, sum: true})
	s2, st2 := qt.scales, qt.stats
	if s2[0] != 1 || st2.snr != MaxSNRdB {
		t.Errorf("all zero: scale %v snr %g", s2, st2.snr)
	}
}

// TestSumPreserving checks the data-free bias correction: every output
// channel's quantized sum is within half a step of its float sum, no value
// leaves ±127, and the error stays that of rounding (each weight moves at
// most one step).
func TestSumPreserving(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name            string
		dims            []int64
		axis, scaleAxis int
	}{
		{"conv per channel", []int64{16, 8, 3, 3}, 0, 0},
		{"matmul per channel", []int64{64, 24}, 1, 1},
		{"per tensor scale, channel sums", []int64{24, 64}, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 1
			for _, d := range tc.dims {
				n *= int(d)
			}
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 0.05)
			}
			n8 := quantizeInt8(x, tc.dims, int8Params{axis: tc.scaleAxis, sumAxis: tc.axis})
			s8 := quantizeInt8(x, tc.dims, int8Params{axis: tc.scaleAxis, sumAxis: tc.axis, sum: true})
			qn, stN, qs, scales, stS := n8.q, n8.stats, s8.q, s8.scales, s8.stats
			outer, ch, inner := split(tc.dims, tc.axis, n)
			worstNearest := 0.0
			for c := 0; c < ch; c++ {
				var fsum, qsumN, qsumS float64
				for o := 0; o < outer; o++ {
					for k := 0; k < inner; k++ {
						i := (o*ch+c)*inner + k
						s := scales[0]
						if tc.scaleAxis >= 0 {
							s = scales[c]
						}
						fsum += float64(x[i]) / float64(s)
						qsumN += float64(int8(qn[i]))
						qsumS += float64(int8(qs[i]))
						if d := int(int8(qs[i])) - int(int8(qn[i])); d < -1 || d > 1 {
							t.Fatalf("weight %d moved %d steps", i, d)
						}
						if v := int8(qs[i]); v < -127 {
							t.Fatalf("weight %d = %d", i, v)
						}
					}
				}
				if d := math.Abs(fsum - qsumS); d > 0.5+1e-9 {
					t.Errorf("channel %d: float sum %.3f, quantized sum %.0f (off %.3f steps)", c, fsum, qsumS, d)
				}
				worstNearest = max(worstNearest, math.Abs(fsum-qsumN))
			}
			if worstNearest <= 1 {
				t.Errorf("plain rounding was already within %.2f steps: the test shows nothing", worstNearest)
			}
			if stS.snr < stN.snr-1 {
				t.Errorf("SNR %.2f dB with sum rounding vs %.2f nearest", stS.snr, stN.snr)
			}
		})
	}
	// Saturated channel: all weights at the maximum cannot move up.
	x := []float32{1, 1, 1, 1, 0.996}
	q := quantizeInt8(x, []int64{1, 5}, int8Params{axis: 0, sumAxis: 0, sum: true}).q
	for i, v := range q {
		if int8(v) < 126 {
			t.Errorf("q[%d] = %d", i, int8(v))
		}
	}
}

func equalDims(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A weight also read inside an If branch (outer-scope capture) is left
// alone; the rest of the model is still quantized.
func TestSubgraphCaptureSkipped(t *testing.T) {
	var v string
	data := weightModel(t, func(b *testmodels.Builder, x, h string) string {
		v = b.Weight("V", 0.1, 1, 64, 64)
		h = b.Op("MatMul", []string{h, v})
		sub := testmodels.NewBuilder(17, 2)
		sub.Node("Identity", []string{v}, []string{"branch_out"})
		sub.Output("branch_out", 64, 64)
		g := sub.GraphBytes("branch")
		cond := b.Input("C")
		b.Node("If", []string{cond}, []string{"Z"},
			w.Attr{Name: "then_branch", Type: w.AttrTypeGraph, G: g},
			w.Attr{Name: "else_branch", Type: w.AttrTypeGraph, G: g})
		b.Output("Z", 64, 64)
		return h
	})
	out, res := mustQuantize(t, data, perChannelNamed)
	if res.TensorsQuantized != 1 || res.TensorsSkipped != 1 {
		t.Fatalf("quantized %d skipped %d, want 1/1", res.TensorsQuantized, res.TensorsSkipped)
	}
	if vt := findInit(mustParse(t, out), v); vt == nil || vt.dataType != w.DTFloat {
		t.Fatal("captured weight changed")
	}
}

// Before opset 10 there is no DequantizeLinear: both granularities use
// Cast+Mul.
func TestOpset9CastMul(t *testing.T) {
	for _, opts := range []Options{perChannel, {}} {
		out, _ := mustQuantize(t, testmodels.MatMulModel(9, 1), opts)
		if ops := opCount(mustParse(t, out)); ops["DequantizeLinear"] != 0 || ops["Mul"] != 2 {
			t.Errorf("PerChannel=%v: ops %v", opts.PerChannel, ops)
		}
	}
}

func TestSelectLargest(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(300)
		cs := make([]flip, n)
		for i := range cs {
			cs[i] = flip{k: i, res: float64(rng.IntN(40)) / 40} // many ties
		}
		want := slices.Clone(cs)
		slices.SortFunc(want, func(a, b flip) int { return cmp.Compare(b.res, a.res) })
		k := rng.IntN(n + 1)
		got := slices.Clone(selectLargest(cs, k))
		if len(got) != k {
			t.Fatalf("got %d, want %d", len(got), k)
		}
		slices.SortFunc(got, func(a, b flip) int { return cmp.Compare(b.res, a.res) })
		for i := range got {
			if got[i].res != want[i].res {
				t.Fatalf("trial %d: k=%d: %v, want %v", trial, k, got, want[:k])
			}
		}
	}
}
