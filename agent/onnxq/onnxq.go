// Package onnxq is robot-agent's built-in ONNX weight quantizer (the
// "onnx-quantize" pipeline runner). It rewrites the float32 weights of
// MatMul, Gemm and Conv nodes as int8 (symmetric, per channel or per tensor)
// or float16, adding dequantizing nodes that reproduce the original tensor
// names so the rest of the graph is untouched.
//
// For a weight W the output holds W_quantized (int8) with W_scale and
// W_zero_point feeding a DequantizeLinear that produces W (opset >= 13, or
// per tensor from opset 10); before that, per-channel weights become
// Cast(W_quantized) * W_scale with the scale shaped to broadcast along the
// output-channel axis, so the model's opset is never changed. In fp16 mode
// W_fp16 feeds a Cast to float. New nodes go first in the node list, so
// they precede every consumer. Weights the rewrite could change the meaning
// of (graph inputs, tensors with other uses, subgraph captures, external
// data) are skipped and counted.
//
// The protobuf is handled at the wire level (protowire) instead of with
// generated ONNX types, which keeps the agent binary small and lets every
// field the quantizer does not change pass through byte for byte.
package onnxq

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// Sentinel errors. Every error caused by the input model wraps
// ErrInvalidModel; the message says what is wrong with it.
var (
	ErrInvalidModel = errors.New("invalid model")
	// ErrTooLarge is returned (together with ErrInvalidModel) for models
	// above Options.MaxBytes.
	ErrTooLarge = errors.New("model too large")
	// ErrBadOptions reports an unknown Mode or negative limits.
	ErrBadOptions = errors.New("bad options")
)

// Mode selects the weight encoding.
type Mode string

const (
	ModeInt8 Mode = "int8"
	ModeFP16 Mode = "fp16"
)

// DefaultMinElements is used when Options.MinElements is zero: tiny tensors
// (biases, small kernels) save little and cost accuracy.
const DefaultMinElements = 1024

// DefaultMaxBytes is used when Options.MaxBytes is zero. The whole model is
// held in memory, so this bounds the agent's memory use.
const DefaultMaxBytes int64 = 2 << 30

// Rounding selects how int8 values are rounded.
type Rounding string

const (
	// RoundSum (the default) rounds to nearest, then flips the rounding
	// direction of the weights closest to a tie so that every output
	// channel's quantized sum equals its float sum within half a step.
	// Rounding to nearest leaves each channel's sum several steps off; with
	// the large per-channel input means of conv layers (after ReLU or
	// BatchNorm) that shifts the whole output map, which is most of the
	// error of plain rounding on real CNNs. This is data-free bias
	// correction: it needs no calibration inputs.
	RoundSum Rounding = "sum"
	// RoundNearest is plain round-half-to-even, what ONNX Runtime's and
	// TensorRT's weight quantizers do.
	RoundNearest Rounding = "nearest"
)

// Options configures a quantization run.
type Options struct {
	Mode        Mode     `json:"mode"`         // zero = int8
	PerChannel  bool     `json:"per_channel"`  // int8 only; callers normally pass true
	Rounding    Rounding `json:"rounding"`     // int8 only; zero = RoundSum
	MinElements int      `json:"min_elements"` // weights with fewer elements are left as float; zero means 1024
	MaxBytes    int64    `json:"max_bytes"`    // models above this size are refused; zero means 2 GiB
}

func (o Options) normalized() (Options, error) {
	if o.Mode == "" {
		o.Mode = ModeInt8
	}
	if o.Mode != ModeInt8 && o.Mode != ModeFP16 {
		return o, fmt.Errorf("%w: unknown mode %q (want int8 or fp16)", ErrBadOptions, o.Mode)
	}
	if o.Rounding == "" {
		o.Rounding = RoundSum
	}
	if o.Rounding != RoundSum && o.Rounding != RoundNearest {
		return o, fmt.Errorf("%w: unknown rounding %q (want sum or nearest)", ErrBadOptions, o.Rounding)
	}
	if o.MinElements < 0 || o.MaxBytes < 0 {
		return o, fmt.Errorf("%w: MinElements and MaxBytes must not be negative", ErrBadOptions)
	}
	if o.MinElements == 0 {
		o.MinElements = DefaultMinElements
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	return o, nil
}

// Progress stages.
const (
	StageRead     = "read"
	StageQuantize = "quantize"
	StageWrite    = "write"
)

// Progress is reported once after reading, once per weight tensor considered
// for quantization, and once after writing; Total = tensors + 2.
type Progress struct {
	Done    int    `json:"done"`
	Total   int    `json:"total"`
	Stage   string `json:"stage"`
	Message string `json:"message"`
}

// Result summarizes a run.
type Result struct {
	SizeBefore, SizeAfter int64
	CompressionRatio      float64 // SizeBefore / SizeAfter
	TensorsQuantized      int
	TensorsSkipped        int // weights of MatMul/Gemm/Conv left as they were
	MaxAbsError           float64
	MeanSNRdB             float64 // mean over quantized tensors; capped at MaxSNRdB each
	Layers                []Layer // every tensor considered, in graph order
}

// MaxSNRdB caps the SNR of a tensor reproduced exactly.
const MaxSNRdB = 200

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidModel}, args...)...)
}

// checkCtx is a helper so cancellation errors carry the operation.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("onnxq: %s: %w", op, err)
	}
	return nil
}

const (
	protowireBytes  = protowire.BytesType
	protowireVarint = protowire.VarintType
)
