package onnxq

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Layer reports one tensor the quantizer considered.
type Layer struct {
	Name        string  `json:"name"`
	Op          string  `json:"op"`       // the consumer's op type, e.g. Conv
	Role        string  `json:"role"`     // weight, bias or other (a small constant)
	Encoding    string  `json:"encoding"` // what the tensor became: int8, fp16 or float (kept)
	Elements    int64   `json:"elements"`
	BytesBefore int64   `json:"bytes_before"`          // encoded tensor
	BytesAfter  int64   `json:"bytes_after"`           // its replacement: tensors and nodes
	SNRdB       float64 `json:"snr_db,omitempty"`      // weight signal-to-noise ratio, capped at MaxSNRdB
	MaxAbsError float64 `json:"max_abs_error"`         // largest |w - dequantized w|
	Kept        string  `json:"kept,omitempty"`        // why it stayed in higher precision
	Subgraph    bool    `json:"in_subgraph,omitempty"` // defined inside an If/Loop/Scan body
}

// worstLayers is how many of the lowest-SNR layers the report names.
const worstLayers = 5

// Worst returns up to n quantized weights with the lowest SNR, lowest first.
func (r *Result) Worst(n int) []Layer {
	var q []Layer
	for _, l := range r.Layers {
		if l.Kept == "" && l.Role == "weight" {
			q = append(q, l)
		}
	}
	slices.SortStableFunc(q, func(a, b Layer) int {
		switch {
		case a.SNRdB < b.SNRdB:
			return -1
		case a.SNRdB > b.SNRdB:
			return 1
		}
		return 0
	})
	return q[:min(n, len(q))]
}

// OpBytes returns the bytes of the considered tensors before and after,
// per consumer op type.
func (r *Result) OpBytes() map[string][2]int64 {
	m := map[string][2]int64{}
	for _, l := range r.Layers {
		v := m[l.Op]
		v[0] += l.BytesBefore
		v[1] += l.BytesAfter
		m[l.Op] = v
	}
	return m
}

// Metrics returns the figures keyed for the pipeline's metrics report
// (session.completed result.metrics, numbers only): sizes, counts, the
// lowest SNRs (snr_db_worst_1 is the lowest; the report file names them),
// and bytes before and after per op type (bytes_before_conv, ...).
func (r *Result) Metrics() map[string]float64 {
	m := map[string]float64{
		"size_before":       float64(r.SizeBefore),
		"size_after":        float64(r.SizeAfter),
		"compression_ratio": r.CompressionRatio,
		"tensors_quantized": float64(r.TensorsQuantized),
		"tensors_skipped":   float64(r.TensorsSkipped),
		"tensors_fp16":      float64(r.TensorsHalf),
		"values_renamed":    float64(r.ValuesRenamed),
		"max_abs_error":     r.MaxAbsError,
		"mean_snr_db":       r.MeanSNRdB,
	}
	for i, l := range r.Worst(worstLayers) {
		if i == 0 {
			m["snr_db_min"] = l.SNRdB
		}
		m["snr_db_worst_"+strconv.Itoa(i+1)] = l.SNRdB
	}
	for op, b := range r.OpBytes() {
		key := strings.ToLower(op)
		m["bytes_before_"+key] = float64(b[0])
		m["bytes_after_"+key] = float64(b[1])
	}
	return m
}

// report is the JSON quality report written next to the quantized model.
type report struct {
	SizeBefore       int64               `json:"size_before"`
	SizeAfter        int64               `json:"size_after"`
	CompressionRatio float64             `json:"compression_ratio"`
	TensorsQuantized int                 `json:"tensors_quantized"`
	TensorsSkipped   int                 `json:"tensors_skipped"`
	TensorsFP16      int                 `json:"tensors_fp16"`
	ValuesRenamed    int                 `json:"values_renamed"` // layers are named as in the input model
	MeanSNRdB        float64             `json:"mean_snr_db"`
	Worst            []Layer             `json:"worst"`
	Kept             []Layer             `json:"kept"`
	BytesPerOp       map[string][2]int64 `json:"bytes_per_op"` // [before, after]
	Layers           []Layer             `json:"layers"`
}

// WriteReportFile writes the quality report as JSON to path (atomically).
func (r *Result) WriteReportFile(path string) error {
	rep := report{
		SizeBefore: r.SizeBefore, SizeAfter: r.SizeAfter, CompressionRatio: r.CompressionRatio,
		TensorsQuantized: r.TensorsQuantized, TensorsSkipped: r.TensorsSkipped, TensorsFP16: r.TensorsHalf, ValuesRenamed: r.ValuesRenamed, MeanSNRdB: r.MeanSNRdB,
		Worst: r.Worst(worstLayers), Kept: []Layer{}, BytesPerOp: r.OpBytes(), Layers: r.Layers,
	}
	for _, l := range r.Layers {
		if l.Kept != "" {
			rep.Kept = append(rep.Kept, l)
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err = f.Write(append(b, '\n')); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// WriteLog writes a human-readable summary: totals, the worst layers by
// name, what was kept in higher precision and why, bytes per op type.
func (r *Result) WriteLog(w io.Writer) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	fmt.Fprintf(bw, "onnx-quantize: %d -> %d bytes (%.3fx, ratio %.2f), %d tensors quantized, %d skipped, mean SNR %.1f dB\n",
		r.SizeBefore, r.SizeAfter, float64(r.SizeAfter)/float64(max(r.SizeBefore, 1)), r.CompressionRatio,
		r.TensorsQuantized, r.TensorsSkipped, r.MeanSNRdB)
	for i, l := range r.Worst(worstLayers) {
		fmt.Fprintf(bw, "onnx-quantize: worst %d: %q (%s, %s) SNR %.1f dB, max abs error %.3g\n", i+1, l.Name, l.Op, l.Encoding, l.SNRdB, l.MaxAbsError)
	}
	for _, l := range r.Layers {
		if l.Kept != "" {
			fmt.Fprintf(bw, "onnx-quantize: kept %q (%s) as %s: %s\n", l.Name, l.Op, l.Encoding, l.Kept)
		}
	}
	ops := r.OpBytes()
	keys := make([]string, 0, len(ops))
	for k := range ops {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(bw, "onnx-quantize: %s weights %d -> %d bytes\n", k, ops[k][0], ops[k][1])
	}
}
