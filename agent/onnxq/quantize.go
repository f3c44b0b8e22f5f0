package onnxq

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

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
	total int64 // progress total
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
	cands := plan(m, opts)
	// Progress counts tensor bytes; reading and writing weigh a twentieth
	// of them each, so the percentage moves with the layers.
	var work int64
	for i := range cands {
		work += 4 * cands[i].n
	}
	step := max(1, work/20)
	total := work + 2*step
	done := step
	report := func(p Progress) {
		if progress != nil {
			p.Done, p.Total = done, total
			progress(p)
		}
	}
	weights := 0
	for i := range cands {
		if cands[i].role == roleWeight {
			weights++
		}
	}
	report(Progress{Stage: StageRead, Message: fmt.Sprintf("read %d bytes: %d weight tensors, %d float tensors considered", len(data), weights, len(cands))})

	res := &Result{SizeBefore: int64(len(data))}
	nm := &namer{values: m.scope.names}
	repl := make([]*replacement, len(cands))
	var snrSum float64
	external := 0
	var scratch []float32
	for i := range cands {
		c := &cands[i]
		if err := checkCtx(ctx, "quantize"); err != nil {
			return nil, nil, err
		}
		layer := Layer{Name: c.name, Op: c.op, Role: c.role.String(), Encoding: encFloat, Elements: c.n, BytesBefore: int64(len(c.t.raw)),
			Subgraph: c.g.depth > 0, Kept: c.kept}
		if !c.t.hasRaw {
			layer.BytesBefore = 4 * c.n
		}
		if c.enc != encFloat {
			if scratch, err = c.t.floats(scratch); err != nil {
				return nil, nil, fmt.Errorf("onnxq: quantize: %w", err)
			}
			e := encoder{c: c, opset: m.opset, inits: m.ir >= 4, nm: nm}
			switch {
			case !finite(scratch):
				layer.Kept = "contains NaN or Inf"
			case c.enc == encFP16 && c.role != roleWeight && !halfSafe(scratch):
				c.enc = encFloat // not worth a precision loss outside the weights
			case c.enc == encFP16:
				e.half(scratch)
				layer.Encoding = encFP16
			default:
				layer.Encoding = e.int8(scratch, opts)
			}
			if layer.Encoding == encFP16 && e.r.bytes() >= layer.BytesBefore {
				// Too small: the Cast costs more than the halved data saves.
				layer.Encoding = encFloat
				if c.role == roleWeight {
					layer.Kept = fmt.Sprintf("%d elements: smaller as float than as fp16 with a Cast", c.n)
				}
			}
			if layer.Encoding != encFloat {
				repl[i] = &e.r
				layer.SNRdB, layer.MaxAbsError = e.r.stats.snr, e.r.stats.maxAbs
			}
		}
		layer.BytesAfter = layer.BytesBefore
		if repl[i] != nil {
			layer.BytesAfter = repl[i].bytes()
		}
		msg := fmt.Sprintf("%s: %s", c.name, layer.Encoding)
		switch {
		case c.role == roleWeight && layer.Kept == "":
			res.TensorsQuantized++
			res.MaxAbsError = max(res.MaxAbsError, layer.MaxAbsError)
			snrSum += layer.SNRdB
			msg += fmt.Sprintf(", SNR %.1f dB", layer.SNRdB)
		case c.role == roleWeight:
			res.TensorsSkipped++
			if c.t.external {
				external++
			}
			msg += fmt.Sprintf(" (%s)", layer.Kept)
		case layer.Encoding == encFP16:
			res.TensorsHalf++
		}
		if c.role == roleWeight || layer.Encoding != encFloat {
			res.Layers = append(res.Layers, layer)
		}
		done += 4 * c.n
		report(Progress{Stage: StageQuantize, Message: msg})
	}
	if res.TensorsQuantized == 0 {
		switch {
		case external > 0 && external == weights:
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("external data is not supported: all %d weight tensors are stored outside the model file", external))
		case weights == 0:
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("no quantizable weights: no float initializer or Constant (in any graph or subgraph) feeds a weight input of Conv, ConvTranspose, MatMul, Gemm, LSTM, GRU, RNN or Gather"))
		default:
			first := ""
			for _, l := range res.Layers {
				if l.Kept != "" {
					first = fmt.Sprintf("%s: %s", l.Name, l.Kept)
					break
				}
			}
			return nil, nil, fmt.Errorf("onnxq: quantize: %w", invalidf("no quantizable weights: all %d weight tensors were kept (first: %s)", weights, first))
		}
	}
	res.MeanSNRdB = snrSum / float64(res.TensorsQuantized)
	if err := checkCtx(ctx, "write"); err != nil {
		return nil, nil, err
	}
	out := layout(m, edits(cands, repl))
	if !opts.KeepNames {
		var buf bytes.Buffer
		buf.Grow(int(out.size))
		_, _ = out.WriteTo(&buf)
		b, n, err := compactNames(buf.Bytes())
		if err != nil {
			return nil, nil, fmt.Errorf("onnxq: names: %w", invalidf("%v", err))
		}
		out, res.ValuesRenamed = &output{}, n
		out.add(b)
	}
	out.total = total
	res.SizeAfter = out.size
	if out.size > 0 {
		res.CompressionRatio = float64(res.SizeBefore) / float64(out.size)
	}
	return out, res, nil
}

func finite(x []float32) bool {
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}

// graphEdit is what changes in one graph.
type graphEdit struct {
	inits    map[int][][]byte // initializer field index → its replacement tensors
	drop     map[int]bool     // Constant node field indexes to drop
	newNodes [][]byte         // encoded nodes to put first
	newInits [][]byte         // initializers replacing dropped Constant nodes, appended
}

func edits(cands []cand, repl []*replacement) map[*graph]*graphEdit {
	es := map[*graph]*graphEdit{}
	for i, r := range repl {
		if r == nil {
			continue
		}
		c := &cands[i]
		e := es[c.g]
		if e == nil {
			e = &graphEdit{inits: map[int][][]byte{}, drop: map[int]bool{}}
			es[c.g] = e
		}
		if c.init >= 0 {
			e.inits[c.g.inits[c.init].fieldIdx] = r.inits
		} else {
			e.drop[c.g.nodes[c.constN].fieldIdx] = true
			e.newInits = append(e.newInits, r.inits...)
		}
		e.newNodes = append(e.newNodes, r.nodes...)
	}
	return es
}

// layout assembles the output: untouched fields as slices of the input, the
// graphs that changed (and the nodes and attributes holding changed
// subgraphs) re-encoded around them, new nodes first in their graph's node
// list so they precede every consumer.
func layout(m *model, es map[*graph]*graphEdit) *output {
	out := &output{}
	g := layoutGraph(m.graph, es)
	for i, f := range m.fields {
		if i != m.graphIdx || g == nil {
			out.add(f.Raw)
			continue
		}
		out.addField(w.ModelGraph, g)
	}
	return out
}

// layoutGraph returns g re-encoded, or nil when nothing in it changed.
func layoutGraph(g *graph, es map[*graph]*graphEdit) *output {
	changed := map[int]*output{} // node field index → re-encoded node
	for i := range g.nodes {
		if o := layoutNode(&g.nodes[i], es); o != nil {
			changed[g.nodes[i].fieldIdx] = o
		}
	}
	e := es[g]
	if e == nil && len(changed) == 0 {
		return nil
	}
	if e == nil {
		e = &graphEdit{}
	}
	out := &output{}
	nodesDone := false
	emitNodes := func() {
		for _, n := range e.newNodes {
			out.add(fieldPrefix(w.GraphNode, len(n)))
			out.add(n)
		}
		nodesDone = true
	}
	for i, f := range g.fields {
		if f.Num == w.GraphNode && !nodesDone {
			emitNodes()
		}
		if ts, ok := e.inits[i]; ok {
			for _, t := range ts {
				out.add(fieldPrefix(w.GraphInitializer, len(t)))
				out.add(t)
			}
			continue
		}
		if e.drop[i] {
			continue
		}
		if o := changed[i]; o != nil {
			out.addField(w.GraphNode, o)
			continue
		}
		out.add(f.Raw)
	}
	if !nodesDone {
		emitNodes()
	}
	for _, t := range e.newInits {
		out.add(fieldPrefix(w.GraphInitializer, len(t)))
		out.add(t)
	}
	return out
}

// layoutNode returns n re-encoded when a subgraph in its attributes
// changed, or nil.
func layoutNode(n *node, es map[*graph]*graphEdit) *output {
	var changed map[int]*output // node field index → re-encoded attribute
	for _, a := range n.attrs {
		var subs map[int]*output // attribute field index → re-encoded graph
		for _, sg := range a.graphs {
			if o := layoutGraph(sg.g, es); o != nil {
				if subs == nil {
					subs = map[int]*output{}
				}
				subs[sg.fieldIdx] = o
			}
		}
		if subs == nil {
			continue
		}
		ao := &output{}
		for i, f := range a.fields {
			if o := subs[i]; o != nil {
				ao.addField(f.Num, o)
			} else {
				ao.add(f.Raw)
			}
		}
		if changed == nil {
			changed = map[int]*output{}
		}
		changed[a.fieldIdx] = ao
	}
	if changed == nil {
		return nil
	}
	out := &output{}
	for i, f := range n.fields {
		if o := changed[i]; o != nil {
			out.addField(w.NodeAttribute, o)
		} else {
			out.add(f.Raw)
		}
	}
	return out
}

// addField appends o as an embedded message field num.
func (o *output) addField(num protowire.Number, sub *output) {
	o.add(fieldPrefix(num, int(sub.size)))
	o.segs = append(o.segs, sub.segs...)
	o.size += sub.size
}

func fieldPrefix(num protowire.Number, n int) []byte {
	b := protowire.AppendTag(make([]byte, 0, 16), num, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(n))
}
