package onnxq

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	w "github.com/robotfleet/fleetlink/agent/onnxq/internal/onnxwire"
)

// QuantizeFile quantizes the model at inPath and writes the result to
// outPath (atomically, via a temporary file in the same directory; outPath
// may equal inPath). progress may be nil. Cancelling ctx stops the run
// between tensors and leaves outPath untouched.
func QuantizeFile(ctx context.Context, inPath, outPath string, opts Options, progress func(Progress)) (*Result, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, fmt.Errorf("onnxq: %w", err)
	}
	st, err := os.Stat(inPath)
	if err != nil {
		return nil, fmt.Errorf("onnxq: read: %w", err)
	}
	if st.Size() > opts.MaxBytes {
		return nil, fmt.Errorf("onnxq: read %s: %w: %w: %d bytes exceeds the %d byte limit (Options.MaxBytes)",
			inPath, ErrInvalidModel, ErrTooLarge, st.Size(), opts.MaxBytes)
	}
	data, err := os.ReadFile(inPath)
	if err != nil {
		return nil, fmt.Errorf("onnxq: read: %w", err)
	}
	out, res, err := run(ctx, data, opts, progress)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(outPath, out); err != nil {
		return nil, fmt.Errorf("onnxq: write: %w", err)
	}
	out.report(progress)
	return res, nil
}

// Quantize is QuantizeFile for in-memory models.
func Quantize(ctx context.Context, data []byte, opts Options, progress func(Progress)) ([]byte, *Result, error) {
	opts, err := opts.normalized()
	if err != nil {
		return nil, nil, fmt.Errorf("onnxq: %w", err)
	}
	if int64(len(data)) > opts.MaxBytes {
		return nil, nil, fmt.Errorf("onnxq: read: %w: %w: %d bytes exceeds the %d byte limit (Options.MaxBytes)",
			ErrInvalidModel, ErrTooLarge, len(data), opts.MaxBytes)
	}
	out, res, err := run(ctx, data, opts, progress)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	buf.Grow(int(out.size))
	if _, err := out.WriteTo(&buf); err != nil {
		return nil, nil, fmt.Errorf("onnxq: write: %w", err)
	}
	out.report(progress)
	return buf.Bytes(), res, nil
}

func writeFileAtomic(path string, out *output) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if _, err = out.WriteTo(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// output is the rewritten model as a list of byte segments, most of them
// slices of the input, so a large model is never copied whole.
type output struct {
	segs  [][]byte
	size  int64
	total int // progress total
}

func (o *output) add(b []byte) {
	o.segs = append(o.segs, b)
	o.size += int64(len(b))
}

func (o *output) WriteTo(wr io.Writer) (int64, error) {
	var n int64
	for _, s := range o.segs {
		k, err := wr.Write(s)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (o *output) report(progress func(Progress)) {
	if progress != nil {
		progress(Progress{Done: o.total, Total: o.total, Stage: StageWrite, Message: fmt.Sprintf("wrote %d bytes", o.size)})
	}
}

// weight is one tensor chosen for quantization.
type weight struct {
	name    string
	t       tensor
	init    int    // index into graph.inits, or -1
	constN  int    // index into graph.nodes of the Constant producing it, or -1
	axis    int    // per-channel axis, -1 for per-tensor
	op      string // the (first) consumer's op type
	skipWhy string
}

// replacement is what a quantized weight turns into.
type replacement struct {
	inits [][]byte // encoded TensorProtos replacing the initializer
	nodes [][]byte // encoded NodeProtos to put at the start of the graph
	stats tensorStats
}

type tensorStats struct{ maxAbs, snr float64 }

// run plans, quantizes and lays out the output. Only the write step is left
// to the caller.
func run(ctx context.Context, data []byte, opts Options, progress func(Progress)) (*output, *Result, error) {
	if err := checkCtx(ctx, "read"); err != nil {
		return nil, nil, err
	}
	m, err := parseModel(data)
	if err != nil {
		return nil, nil, fmt.Errorf("onnxq: read: %w", err)
	}
	if m.opset == 0 {
		return nil, nil, fmt.Errorf("onnxq: read: %w", invalidf("no opset_import for the default ONNX domain"))
	}
	if m.opset < 7 {
		return nil, nil, fmt.Errorf("onnxq: read: %w", invalidf("opset %d is older than 7, which onnxq does not support", m.opset))
	}
	weights := plan(m, opts)
	total := len(weights) + 2
	report := func(p Progress) {
		if progress != nil {
			p.Total = total
			progress(p)
		}
	}
	report(Progress{Done: 1, Stage: StageRead, Message: fmt.Sprintf("read %d bytes, %d weight tensors", len(data), len(weights))})

	res := &Result{SizeBefore: int64(len(data))}
	nm := newNamer(&m.graph)
	repl := make([]*replacement, len(weights))
	var snrSum float64
	external := 0
	var scratch []float32
	for i := range weights {
		wt := &weights[i]
		if err := checkCtx(ctx, "quantize"); err != nil {
			return nil, nil, err
		}
		msg := ""
		n, _ := wt.t.numElements(1 << 40)
		layer := Layer{Name: wt.name, Op: wt.op, Encoding: "float", Elements: n, BytesBefore: int64(len(wt.t.raw))}
		if !wt.t.hasRaw {
			layer.BytesBefore = 4 * n
		}
		if wt.skipWhy == "" {
			if scratch, err = wt.t.floats(scratch); err != nil {
				return nil, nil, fmt.Errorf("onnxq: quantize: %w", err)
			}
			r, why := quantizeWeight(wt, scratch, m.opset, opts, nm)
			if why != "" {
				wt.skipWhy = why
			} else {
				repl[i] = r
				layer.Encoding, layer.SNRdB, layer.MaxAbsError = string(opts.Mode), r.stats.snr, r.stats.maxAbs
				for _, b := range r.inits {
					layer.BytesAfter += int64(len(b))
				}
				for _, b := range r.nodes {
					layer.BytesAfter += int64(len(b))
				}
				res.TensorsQuantized++
				res.MaxAbsError = max(res.MaxAbsError, r.stats.maxAbs)
				snrSum += r.stats.snr
				msg = fmt.Sprintf("%s: %s, max abs error %.3g, SNR %.1f dB", wt.name, opts.Mode, r.stats.maxAbs, r.stats.snr)
			}
		}
		if wt.skipWhy != "" {
			res.TensorsSkipped++
			if wt.t.external {
				external++
			}
			msg = fmt.Sprintf("%s: skipped (%s)", wt.name, wt.skipWhy)
			layer.Kept, layer.BytesAfter = wt.skipWhy, layer.BytesBefore
		}
		res.Layers = append(res.Layers, layer)
		report(Progress{Done: 2 + i, Stage: StageQuantize, Message: msg})
	}
	if res.TensorsQuantized == 0 {
		switch {
		case external > 0 && external == len(weights):
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("external data is not supported: all %d weight tensors are stored outside the model file", external))
		case len(weights) == 0:
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("no quantizable weights: no float initializer or Constant feeds a MatMul, Gemm or Conv weight input"))
		default:
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("no quantizable weights: all %d weight tensors were skipped (first: %s: %s)", len(weights), weights[0].name, weights[0].skipWhy))
		}
	}
	res.MeanSNRdB = snrSum / float64(res.TensorsQuantized)
	if err := checkCtx(ctx, "write"); err != nil {
		return nil, nil, err
	}
	out := layout(m, weights, repl)
	out.total = total
	res.SizeAfter = out.size
	if out.size > 0 {
		res.CompressionRatio = float64(res.SizeBefore) / float64(out.size)
	}
	return out, res, nil
}

// weightSlot reports whether input i of n is a weight this package
// quantizes, and along which axis its output channels run (given rank).
func weightSlot(n *node, i int, rank int) (ok bool, axis int) {
	if !n.defaultDomain() || i != 1 {
		return false, 0
	}
	switch n.opType {
	case "Conv":
		return rank >= 3, 0
	case "MatMul":
		// B is [..., K, N]: output channels are the last axis.
		return rank >= 2, rank - 1
	case "Gemm":
		if a := n.attr("transB"); a != nil && a.hasI && a.i != 0 {
			return rank == 2, 0
		}
		return rank == 2, 1
	}
	return false, 0
}

func isQuantizableOp(n *node) bool {
	if !n.defaultDomain() {
		return false
	}
	switch n.opType {
	case "Conv", "MatMul", "Gemm":
		return true
	}
	return false
}

// plan lists the weight tensors feeding MatMul/Gemm/Conv weight inputs, in
// graph order, each either to quantize or with the reason it is skipped.
func plan(m *model, opts Options) []weight {
	g := &m.graph
	initIdx := map[string]int{}
	dupInit := map[string]bool{}
	for i, in := range g.inits {
		if _, ok := initIdx[in.t.name]; ok {
			dupInit[in.t.name] = true
		}
		initIdx[in.t.name] = i
	}
	constIdx := map[string]int{}
	producers := map[string]int{}
	for i := range g.nodes {
		n := &g.nodes[i]
		for _, o := range n.outputs {
			producers[o]++
		}
		if n.defaultDomain() && n.opType == "Constant" && len(n.outputs) == 1 {
			if a := n.attr("value"); a != nil && a.hasT {
				constIdx[n.outputs[0]] = i
			}
		}
	}

	var out []weight
	seen := map[string]int{} // name → index in out
	for i := range g.nodes {
		n := &g.nodes[i]
		if !isQuantizableOp(n) || len(n.inputs) < 2 || n.inputs[1] == "" {
			continue
		}
		name := n.inputs[1]
		if _, ok := seen[name]; ok {
			continue
		}
		wt := weight{name: name, init: -1, constN: -1, axis: -1, op: n.opType}
		if ii, ok := initIdx[name]; ok {
			wt.init, wt.t = ii, g.inits[ii].t
		} else if ci, ok := constIdx[name]; ok {
			t, err := parseTensor(g.nodes[ci].attr("value").t)
			if err != nil {
				continue // malformed Constant: not ours to judge, leave it alone
			}
			wt.constN, wt.t = ci, t
			wt.t.name = name
		} else {
			continue // computed at run time or a plain graph input
		}
		seen[name] = len(out)
		wt.skipWhy = checkWeight(m, &wt, opts, dupInit[name], producers[name])
		out = append(out, wt)
	}
	return out
}

// checkWeight decides whether wt can be replaced without changing what any
// consumer sees, and picks the channel axis. It returns a skip reason or "".
func checkWeight(m *model, wt *weight, opts Options, dup bool, producers int) string {
	g := &m.graph
	t := &wt.t
	switch {
	case t.external:
		return "external data"
	case t.dataType != w.DTFloat:
		return "not float32"
	case dup:
		return "initializer name defined more than once"
	case wt.init >= 0 && g.inputs[wt.name]:
		return "initializer is also a graph input and may be overridden at run time"
	case wt.init >= 0 && producers > 0, wt.constN >= 0 && producers > 1:
		return "name also produced by a node"
	case g.output[wt.name]:
		return "tensor is a graph output"
	case g.subgraphUses[wt.name]:
		return "tensor is used inside a subgraph"
	}
	n, err := t.numElements(1 << 40)
	if err != nil {
		return err.Error()
	}
	if n < int64(opts.MinElements) {
		return fmt.Sprintf("%d elements, below the %d minimum", n, opts.MinElements)
	}
	axis := -2 // unset
	for i := range g.nodes {
		nd := &g.nodes[i]
		for k, in := range nd.inputs {
			if in != wt.name {
				continue
			}
			ok, a := weightSlot(nd, k, len(t.dims))
			if !ok {
				return fmt.Sprintf("also used as input %d of %s", k, nd.opType)
			}
			if wt.op == "" {
				wt.op = nd.opType
			}
			if axis == -2 {
				axis = a
			} else if axis != a {
				axis = -1 // consumers disagree on the channel axis: per tensor
			}
		}
	}
	wt.axis = axis
	return ""
}

// namer hands out value and node names not used anywhere in the model.
type namer struct{ values, nodes map[string]bool }

func newNamer(g *graph) *namer { return &namer{values: g.names, nodes: g.nodeNames} }

func uniq(set map[string]bool, base string) string {
	name := base
	for i := 1; set[name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	set[name] = true
	return name
}

// quantizeWeight builds the replacement for one weight. It returns a skip
// reason instead when the values cannot be represented.
func quantizeWeight(wt *weight, x []float32, opset int64, opts Options, nm *namer) (*replacement, string) {
	r := &replacement{}
	dims := wt.t.dims
	// addTensor stores a new tensor in the same kind of place the weight
	// came from: an initializer, or a Constant node.
	addTensor := func(t w.Tensor) {
		if wt.init >= 0 {
			r.inits = append(r.inits, w.AppendTensor(make([]byte, 0, w.SizeTensor(t)), t))
			return
		}
		out := t.Name
		t.Name = ""
		r.nodes = append(r.nodes, w.AppendNode(nil, w.Node{
			Name: uniq(nm.nodes, out+"_Constant"), OpType: "Constant", Outputs: []string{out},
			Attrs: []w.Attr{{Name: "value", Type: w.AttrTypeTensor, T: &t}},
		}))
	}
	castNode := func(in, out string) []byte {
		return w.AppendNode(nil, w.Node{
			Name: uniq(nm.nodes, out+"_Cast"), OpType: "Cast", Inputs: []string{in}, Outputs: []string{out},
			Attrs: []w.Attr{{Name: "to", Type: w.AttrTypeInt, I: w.DTFloat}},
		})
	}

	if opts.Mode == ModeFP16 {
		raw := make([]byte, 2*len(x))
		var st errAcc
		for i, v := range x {
			h := float32ToFloat16(v)
			raw[2*i], raw[2*i+1] = byte(h), byte(h>>8)
			st.add(v, float16ToFloat32(h))
		}
		qn := uniq(nm.values, wt.name+"_fp16")
		addTensor(w.Tensor{Name: qn, Dims: dims, DataType: w.DTFloat16, Raw: raw})
		r.nodes = append(r.nodes, castNode(qn, wt.name))
		r.stats = st.stats()
		return r, ""
	}

	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, "contains NaN or Inf, not representable in int8"
		}
	}
	axis := wt.axis
	if !opts.PerChannel {
		axis = -1
	}
	q, scales, st := quantizeInt8(x, dims, axis, wt.axis, opts.Rounding)
	qn := uniq(nm.values, wt.name+"_quantized")
	sn := uniq(nm.values, wt.name+"_scale")
	addTensor(w.Tensor{Name: qn, Dims: dims, DataType: w.DTInt8, Raw: q})
	r.stats = st

	scaleRaw := make([]byte, 0, 4*len(scales))
	for _, s := range scales {
		u := math.Float32bits(s)
		scaleRaw = append(scaleRaw, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	useDQ := opset >= 13 || (opset >= 10 && axis < 0)
	if useDQ {
		var sdims []int64 // scalar for per-tensor
		if axis >= 0 {
			sdims = []int64{int64(len(scales))}
		}
		zn := uniq(nm.values, wt.name+"_zero_point")
		addTensor(w.Tensor{Name: sn, Dims: sdims, DataType: w.DTFloat, Raw: scaleRaw})
		addTensor(w.Tensor{Name: zn, Dims: sdims, DataType: w.DTInt8, Raw: make([]byte, len(scales))})
		dq := w.Node{
			Name: uniq(nm.nodes, wt.name+"_DequantizeLinear"), OpType: "DequantizeLinear",
			Inputs: []string{qn, sn, zn}, Outputs: []string{wt.name},
		}
		if axis >= 0 {
			dq.Attrs = []w.Attr{{Name: "axis", Type: w.AttrTypeInt, I: int64(axis)}}
		}
		r.nodes = append(r.nodes, w.AppendNode(nil, dq))
		return r, ""
	}
	// Before DequantizeLinear had an axis (opset 13), per-channel
	// dequantization is Cast then Mul by a scale shaped to broadcast along
	// the channel axis, e.g. [C,1,1,1] for Conv or [1,N] for MatMul.
	var sdims []int64
	if axis >= 0 {
		sdims = make([]int64, len(dims))
		for i := range sdims {
			sdims[i] = 1
		}
		sdims[axis] = dims[axis]
	}
	addTensor(w.Tensor{Name: sn, Dims: sdims, DataType: w.DTFloat, Raw: scaleRaw})
	cn := uniq(nm.values, wt.name+"_dequantized")
	r.nodes = append(r.nodes, castNode(qn, cn))
	r.nodes = append(r.nodes, w.AppendNode(nil, w.Node{
		Name: uniq(nm.nodes, wt.name+"_Mul"), OpType: "Mul", Inputs: []string{cn, sn}, Outputs: []string{wt.name},
	}))
	return r, ""
}

// quantizeInt8 quantizes x symmetrically to [-127, 127] with one scale per
// slice along axis (or one for the whole tensor when axis < 0). With
// RoundSum, each slice along sumAxis (the output channels, whatever the
// scale's granularity; none when sumAxis < 0) keeps its sum: see
// preserveSums. x must be finite.
func quantizeInt8(x []float32, dims []int64, axis, sumAxis int, rounding Rounding) ([]byte, []float32, tensorStats) {
	outer, ch, inner := split(dims, axis, len(x))
	maxAbs := make([]float32, ch)
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			m := maxAbs[c]
			for _, v := range x[base : base+inner] {
				if v < 0 {
					v = -v
				}
				if v > m {
					m = v
				}
			}
			maxAbs[c] = m
		}
	}
	scales := make([]float32, ch)
	inv := make([]float64, ch)
	for c, m := range maxAbs {
		s := m / 127
		if s == 0 { // all zeros, or so tiny the scale underflows: any scale works
			s = 1
		}
		scales[c] = s
		inv[c] = 1 / float64(s)
	}
	q := make([]byte, len(x))
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			iv := inv[c]
			for k, v := range x[base : base+inner] {
				r := math.RoundToEven(float64(v) * iv)
				q[base+k] = byte(int8(min(127, max(-127, r))))
			}
		}
	}
	if rounding == RoundSum && sumAxis >= 0 {
		preserveSums(q, x, dims, axis, sumAxis, inv)
	}
	var st errAcc
	for o := 0; o < outer; o++ {
		for c := 0; c < ch; c++ {
			base := (o*ch + c) * inner
			s := scales[c]
			for k, v := range x[base : base+inner] {
				// Same arithmetic as DequantizeLinear: float32 product.
				st.add(v, float32(int8(q[base+k]))*s)
			}
		}
	}
	return q, scales, st.stats()
}

// split returns the sizes before, along and after axis (axis < 0: the
// whole tensor is one slice).
func split(dims []int64, axis, n int) (outer, ch, inner int) {
	if axis < 0 {
		return 1, 1, n
	}
	outer, ch, inner = 1, int(dims[axis]), 1
	for _, d := range dims[:axis] {
		outer *= int(d)
	}
	for _, d := range dims[axis+1:] {
		inner *= int(d)
	}
	return outer, ch, inner
}

// preserveSums adjusts q so that the sum of every slice along sumAxis
// equals the float sum within half a step: with d the slice's summed
// rounding residual (in steps), it moves round(d) weights one step in d's
// direction, those whose residual is largest in that direction, never past
// ±127. inv holds 1/scale per slice along scaleAxis (one value when
// scaleAxis < 0); scaleAxis is either sumAxis or < 0, so the scale is
// constant within a slice and the step is the same for every weight in it.
func preserveSums(q []byte, x []float32, dims []int64, scaleAxis, sumAxis int, inv []float64) {
	outer, ch, inner := split(dims, sumAxis, len(x))
	type cand struct {
		k   int     // index into q
		res float64 // residual x/s - q, in steps
	}
	cs := make([]cand, 0, outer*inner) // one channel's weights, reused
	for c := 0; c < ch; c++ {
		iv := inv[0]
		if scaleAxis >= 0 {
			iv = inv[c]
		}
		cs = cs[:0]
		var d float64
		for o := 0; o < outer; o++ {
			base := (o*ch + c) * inner
			for k := base; k < base+inner; k++ {
				r := float64(x[k])*iv - float64(int8(q[k]))
				d += r
				cs = append(cs, cand{k, r})
			}
		}
		n := int(math.Round(d))
		if n == 0 {
			continue
		}
		step := int8(1)
		if n < 0 {
			step, n = -1, -n
		}
		// Largest residual in the needed direction first.
		slices.SortFunc(cs, func(a, b cand) int {
			return cmp.Compare(b.res*float64(step), a.res*float64(step))
		})
		for _, cd := range cs {
			if n == 0 {
				break
			}
			v := int8(q[cd.k])
			if (step > 0 && v == 127) || (step < 0 && v == -127) {
				continue
			}
			q[cd.k] = byte(v + step)
			n--
		}
	}
}

// errAcc accumulates reconstruction error statistics in float64.
type errAcc struct{ maxAbs, sig, noise float64 }

func (a *errAcc) add(x, xh float32) {
	d := float64(x) - float64(xh)
	a.sig += float64(x) * float64(x)
	a.noise += d * d
	if d < 0 {
		d = -d
	}
	if d > a.maxAbs {
		a.maxAbs = d
	}
}

func (a *errAcc) stats() tensorStats {
	snr := float64(MaxSNRdB)
	if a.noise > 0 && a.sig > 0 {
		snr = min(snr, 10*math.Log10(a.sig/a.noise))
	} else if a.noise > 0 {
		snr = 0
	}
	return tensorStats{maxAbs: a.maxAbs, snr: snr}
}

// layout assembles the output: untouched fields as slices of the input, the
// graph re-encoded around them, new nodes first in the node list so they
// precede every consumer.
func layout(m *model, weights []weight, repl []*replacement) *output {
	g := &m.graph
	dropInit := map[int]*replacement{}
	dropNode := map[int]bool{}
	var newNodes [][]byte
	for i, r := range repl {
		if r == nil {
			continue
		}
		wt := &weights[i]
		if wt.init >= 0 {
			dropInit[g.inits[wt.init].fieldIdx] = r
		} else {
			dropNode[g.nodes[wt.constN].fieldIdx] = true
		}
		newNodes = append(newNodes, r.nodes...)
	}

	var gsegs output
	nodesDone := false
	emitNodes := func() {
		for _, n := range newNodes {
			gsegs.add(fieldPrefix(w.GraphNode, len(n)))
			gsegs.add(n)
		}
		nodesDone = true
	}
	for i, f := range g.fields {
		if f.Num == w.GraphNode && !nodesDone {
			emitNodes()
		}
		if r, ok := dropInit[i]; ok {
			for _, t := range r.inits {
				gsegs.add(fieldPrefix(w.GraphInitializer, len(t)))
				gsegs.add(t)
			}
			continue
		}
		if dropNode[i] {
			continue
		}
		gsegs.add(f.Raw)
	}
	if !nodesDone {
		emitNodes()
	}

	out := &output{}
	for i, f := range m.fields {
		if i != m.graphIdx {
			out.add(f.Raw)
			continue
		}
		out.add(fieldPrefix(w.ModelGraph, int(gsegs.size)))
		for _, s := range gsegs.segs {
			out.add(s)
		}
	}
	return out
}

func fieldPrefix(num protowire.Number, n int) []byte {
	b := protowire.AppendTag(make([]byte, 0, 16), num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}
