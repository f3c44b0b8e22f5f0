// Package testmodels builds small ONNX models with seeded random weights for
// onnxq's tests and benchmarks. Models are generated at test time rather than
// checked in, so the repository carries no binary blobs.
package testmodels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// Builder accumulates a single-graph model. Weights go to graph initializers
// unless ConstWeights is set, in which case they become Constant nodes.
type Builder struct {
	Opset        int64
	ConstWeights bool

	rng    *rand.Rand
	nodes  [][]byte
	inits  [][]byte
	inputs [][]byte
	output [][]byte
	seq    int
	seqp   *int // shared with the builder of the enclosing graph, when set
}

// NewBuilder returns a builder whose random weights derive from seed.
func NewBuilder(opset int64, seed uint64) *Builder {
	return &Builder{Opset: opset, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (b *Builder) name(prefix string) string {
	p := b.seqRef()
	*p++
	return fmt.Sprintf("%s_%d", prefix, *p)
}

// seqRef is the name counter, shared by a model's graph and subgraphs.
func (b *Builder) seqRef() *int {
	if b.seqp != nil {
		return b.seqp
	}
	return &b.seq
}

// Input declares a float graph input; a negative dim becomes dim_param "N".
func (b *Builder) Input(name string, dims ...int64) string {
	b.inputs = append(b.inputs, valueInfo(name, dims))
	return name
}

// Output declares a float graph output.
func (b *Builder) Output(name string, dims ...int64) {
	b.output = append(b.output, valueInfo(name, dims))
}

// Weight adds a float tensor with values ~ N(0, std²); each slice along axis
// gets its own extra scale factor so per-channel quantization has something
// to win over per-tensor.
func (b *Builder) Weight(prefix string, std float64, axis int, dims ...int64) string {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	vals := make([]float32, n)
	chScale := make([]float64, dims[axis])
	for i := range chScale {
		chScale[i] = 0.2 + 1.8*b.rng.Float64()
	}
	inner := int64(1)
	for _, d := range dims[axis+1:] {
		inner *= d
	}
	for i := range vals {
		ch := (int64(i) / inner) % dims[axis]
		vals[i] = float32(b.rng.NormFloat64() * std * chScale[ch])
	}
	return b.Tensor(b.name(prefix), dims, vals)
}

// Tensor adds a float tensor with the given values as an initializer (or a
// Constant node) and returns its name.
func (b *Builder) Tensor(name string, dims []int64, vals []float32) string {
	t := w.Tensor{Name: name, Dims: dims, DataType: w.DTFloat, Raw: f32bytes(vals)}
	if b.ConstWeights {
		t.Name = ""
		b.Node("Constant", []string{}, []string{name}, w.Attr{Name: "value", Type: w.AttrTypeTensor, T: &t})
		return name
	}
	b.inits = append(b.inits, w.AppendTensor(nil, t))
	return name
}

// Int64Init adds an int64 initializer (e.g. a Reshape shape).
func (b *Builder) Int64Init(name string, vals ...int64) string {
	raw := make([]byte, 0, 8*len(vals))
	for _, v := range vals {
		for k := 0; k < 8; k++ {
			raw = append(raw, byte(uint64(v)>>(8*k)))
		}
	}
	b.inits = append(b.inits, w.AppendTensor(nil, w.Tensor{Name: name, Dims: []int64{int64(len(vals))}, DataType: w.DTInt64, Raw: raw}))
	return name
}

// Node appends a node of the default domain.
func (b *Builder) Node(op string, in, out []string, attrs ...w.Attr) {
	b.nodes = append(b.nodes, w.AppendNode(nil, w.Node{Name: b.name(op), OpType: op, Inputs: in, Outputs: out, Attrs: attrs}))
}

// Op appends a single-output node and returns the output name.
func (b *Builder) Op(op string, in []string, attrs ...w.Attr) string {
	out := b.name(op + "_out")
	b.Node(op, in, []string{out}, attrs...)
	return out
}

// GraphBytes encodes the graph so far as a GraphProto.
func (b *Builder) GraphBytes(name string) []byte {
	var g []byte
	for _, n := range b.nodes {
		g = w.AppendBytes(g, w.GraphNode, n)
	}
	g = w.AppendString(g, w.GraphName, name)
	for _, t := range b.inits {
		g = w.AppendBytes(g, w.GraphInitializer, t)
	}
	for _, v := range b.inputs {
		g = w.AppendBytes(g, w.GraphInput, v)
	}
	for _, v := range b.output {
		g = w.AppendBytes(g, w.GraphOutput, v)
	}
	return g
}

// Model encodes a ModelProto. IR version follows the opset (opset 11 shipped
// with IR 6, 17 with IR 8).
func (b *Builder) Model(name string) []byte {
	ir := int64(8)
	if b.Opset < 13 {
		ir = 6
	}
	var m []byte
	m = w.AppendVarint(m, w.ModelIRVersion, ir)
	m = w.AppendString(m, 2, "fleetlink-testmodels") // producer_name
	m = w.AppendBytes(m, w.ModelGraph, b.GraphBytes(name))
	var op []byte
	op = w.AppendString(op, w.OpsetDomain, "")
	op = w.AppendVarint(op, w.OpsetVersion, b.Opset)
	return w.AppendBytes(m, w.ModelOpsetImport, op)
}

func valueInfo(name string, dims []int64) []byte { return valueInfoT(name, w.DTFloat, dims) }

func f32bytes(v []float32) []byte {
	out := make([]byte, 4*len(v))
	for i, f := range v {
		u := math.Float32bits(f)
		out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return out
}

func intAttr(name string, v int64) w.Attr { return w.Attr{Name: name, Type: w.AttrTypeInt, I: v} }
func intsAttr(name string, v ...int64) w.Attr {
	return w.Attr{Name: name, Type: w.AttrTypeInts, Ints: v}
}

func (b *Builder) bias(n int64) string { return b.biasAs(n, false) }

// biasAs adds a bias ~ N(0, 0.01) as an initializer, or a Constant node
// when asConst. Biases stay initializers even in ConstWeights models
// unless asked: they are not int8 targets.
func (b *Builder) biasAs(n int64, asConst bool) string {
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(b.rng.NormFloat64() * 0.1)
	}
	saved := b.ConstWeights
	b.ConstWeights = asConst
	name := b.Tensor(b.name("bias"), []int64{n}, vals)
	b.ConstWeights = saved
	return name
}

// gemm adds Gemm(x, W, bias) with W stored as [out,in] when transB.
func (b *Builder) gemm(x string, in, out int64, transB bool) string {
	std := 1 / math.Sqrt(float64(in))
	var wt string
	if transB {
		wt = b.Weight("W", std, 0, out, in)
		return b.Op("Gemm", []string{x, wt, b.bias(out)}, intAttr("transB", 1))
	}
	wt = b.Weight("W", std, 1, in, out)
	return b.Op("Gemm", []string{x, wt, b.bias(out)})
}

// Spec names a generated model.
type Spec struct {
	Name  string
	Opset int64
	Build func(opset int64, seed uint64) []byte
	// WeightDominated is true when weights ≥ MinElements make up nearly all
	// of the file, so int8 must shrink it to under 0.3×.
	WeightDominated bool
}

// MLP: X[N,64] → Gemm → Relu → Gemm → Relu → Gemm → Y[N,10].
func MLP(opset int64, seed uint64, transB, constWeights bool) []byte {
	b := NewBuilder(opset, seed)
	b.ConstWeights = constWeights
	x := b.Input("X", -1, 64)
	h := b.Op("Relu", []string{b.gemm(x, 64, 256, transB)})
	h = b.Op("Relu", []string{b.gemm(h, 256, 128, transB)})
	y := b.gemm(h, 128, 10, transB)
	b.Node("Identity", []string{y}, []string{"Y"})
	b.Output("Y", -1, 10)
	return b.Model("mlp")
}

// MatMulModel: X[N,128] → MatMul → Add → Relu → MatMul → Y[N,64].
func MatMulModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 128)
	h := b.Op("MatMul", []string{x, b.Weight("W", 1/math.Sqrt(128), 1, 128, 256)})
	h = b.Op("Relu", []string{b.Op("Add", []string{h, b.bias(256)})})
	h = b.Op("MatMul", []string{h, b.Weight("W", 1/math.Sqrt(256), 1, 256, 64)})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 64)
	return b.Model("matmul")
}

// SharedModel uses one [128,128] initializer for two MatMuls.
func SharedModel(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 128)
	wt := b.Weight("W", 1/math.Sqrt(128), 1, 128, 128)
	h := b.Op("Relu", []string{b.Op("MatMul", []string{x, wt})})
	h = b.Op("MatMul", []string{h, wt})
	b.Node("Identity", []string{h}, []string{"Y"})
	b.Output("Y", -1, 128)
	return b.Model("shared")
}

// CNN: X[N,3,16,16] → Conv5x5 → Relu → Conv3x3 → Relu → Flatten (or Reshape
// before opset 13 is irrelevant; both exist) → Gemm(transB) → Y[N,10].
func CNN(opset int64, seed uint64) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, 3, 16, 16)
	w1 := b.Weight("conv_W", 1/math.Sqrt(75), 0, 16, 3, 5, 5)
	h := b.Op("Conv", []string{x, w1, b.bias(16)}, intsAttr("pads", 2, 2, 2, 2), intsAttr("kernel_shape", 5, 5))
	h = b.Op("Relu", []string{h})
	w2 := b.Weight("conv_W", 1/math.Sqrt(144), 0, 32, 16, 3, 3)
	h = b.Op("Conv", []string{h, w2, b.bias(32)}, intsAttr("pads", 1, 1, 1, 1), intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2))
	h = b.Op("Relu", []string{h})
	h = b.Op("Reshape", []string{h, b.Int64Init("flat_shape", 0, -1)})
	y := b.gemm(h, 32*8*8, 10, true)
	b.Node("Identity", []string{y}, []string{"Y"})
	b.Output("Y", -1, 10)
	return b.Model("cnn")
}

// Big is a wide MLP for benchmarks: about width²·layers·4 bytes of weights.
func Big(opset int64, seed uint64, width int64, layers int) []byte {
	b := NewBuilder(opset, seed)
	x := b.Input("X", -1, width)
	for i := 0; i < layers; i++ {
		x = b.Op("Relu", []string{b.gemm(x, width, width, i%2 == 1)})
	}
	b.Node("Identity", []string{x}, []string{"Y"})
	b.Output("Y", -1, width)
	return b.Model("big")
}

// All lists the standard test models at opsets 11 and 17.
func All() []Spec {
	var out []Spec
	for _, op := range []int64{11, 17} {
		out = append(out,
			Spec{fmt.Sprintf("mlp_opset%d", op), op, func(o int64, s uint64) []byte { return MLP(o, s, false, false) }, true},
			Spec{fmt.Sprintf("mlp_transB_opset%d", op), op, func(o int64, s uint64) []byte { return MLP(o, s, true, false) }, true},
			Spec{fmt.Sprintf("mlp_const_opset%d", op), op, func(o int64, s uint64) []byte { return MLP(o, s, false, true) }, true},
			Spec{fmt.Sprintf("matmul_opset%d", op), op, MatMulModel, true},
			Spec{fmt.Sprintf("shared_opset%d", op), op, SharedModel, true},
			Spec{fmt.Sprintf("cnn_opset%d", op), op, CNN, true},
		)
	}
	return out
}

// WriteAll writes every model in All into dir and returns their paths keyed
// by name.
func WriteAll(dir string, seed uint64) (map[string]string, error) {
	paths := map[string]string{}
	for _, s := range All() {
		p := filepath.Join(dir, s.Name+".onnx")
		if err := os.WriteFile(p, s.Build(s.Opset, seed), 0o644); err != nil {
			return nil, err
		}
		paths[s.Name] = p
	}
	return paths, nil
}

// AddInitializer appends an already encoded TensorProto to the initializers,
// for tests that need fields the builder does not produce.
func (b *Builder) AddInitializer(encoded []byte) {
	b.inits = append(b.inits, encoded)
}

// Rand exposes the builder's seeded generator.
func (b *Builder) Rand() *rand.Rand { return b.rng }
