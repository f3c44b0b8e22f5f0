package session

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/robotfleet/fleetlink/agent/onnxq"
	"github.com/robotfleet/fleetlink/protocol"
)

// onnxRunner is the built-in onnx-quantize runner: it runs onnxq in
// process. Its params are mode (int8|fp16), per_channel and min_elements.
type onnxRunner struct{}

func (onnxRunner) Run(ctx context.Context, job *Job, report func(Update)) (Outcome, error) {
	opts := onnxq.Options{Mode: onnxq.ModeInt8, PerChannel: true}
	if v, ok := job.Params["mode"].(string); ok {
		opts.Mode = onnxq.Mode(v)
	}
	if v, ok := job.Params["per_channel"].(bool); ok {
		opts.PerChannel = v
	}
	if v, ok := toFloat(job.Params["min_elements"]); ok {
		opts.MinElements = int(v)
	}
	base := strings.TrimSuffix(filepath.Base(job.ModelPath), filepath.Ext(job.ModelPath))
	out := filepath.Join(job.OutputDir, base+"."+string(opts.Mode)+".onnx")
	fmt.Fprintf(job.Log, "onnx-quantize: %s -> %s mode=%s per_channel=%t min_elements=%d\n",
		job.ModelPath, out, opts.Mode, opts.PerChannel, opts.MinElements)
	res, err := onnxq.QuantizeFile(ctx, job.ModelPath, out, opts, func(p onnxq.Progress) {
		pct := 0.0
		if p.Total > 0 {
			pct = 100 * float64(p.Done) / float64(p.Total)
		}
		report(Update{Percent: clampPercent(pct), Stage: p.Stage, Message: p.Message})
	})
	switch {
	case err == nil:
		m := res.Metrics()
		fmt.Fprintf(job.Log, "onnx-quantize: done %v\n", m)
		return Outcome{Metrics: m}, nil
	case ctx.Err() != nil:
		return Outcome{}, &RunError{Message: "stopped", Err: context.Cause(ctx)}
	case errors.Is(err, onnxq.ErrInvalidModel):
		fmt.Fprintf(job.Log, "onnx-quantize: %v\n", err)
		return Outcome{}, &RunError{Code: protocol.FailInvalidModel, Message: err.Error(), Err: err}
	default:
		fmt.Fprintf(job.Log, "onnx-quantize: %v\n", err)
		return Outcome{}, &RunError{Code: protocol.FailInternal, Message: err.Error(), Err: err}
	}
}
