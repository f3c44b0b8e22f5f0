// Package onnxq is robot-agent's built-in ONNX weight quantizer (the
// "onnx-quantize" pipeline runner). It rewrites float32 weights as int8
// (per output channel or per tensor, symmetric or with zero points) or
// float16, adding dequantizing nodes that reproduce the original tensor
// names so the rest of the graph is untouched. No calibration data is
// needed.
//
// What counts as a weight: a float initializer or Constant, in the model's
// graph or any If/Loop/Scan body, whose every use is a weight input of Conv,
// ConvTranspose (channels on axis 1), MatMul, Gemm, LSTM/GRU/RNN (W and R),
// or Gather (an embedding table, one scale per row), directly or through
// data movement (Slice, Concat, Reshape, Unsqueeze, ...), as exporters
// slice RNN weights into gates. A weight is quantized once however many
// subgraphs read it. Biases (Conv, ConvTranspose, Gemm, RNN B) and small
// tensors (under MinElements) read only by arithmetic become fp16 with a
// Cast, when that is smaller; anything the rewrite could change the meaning
// of (graph inputs, other uses, graph outputs, names defined twice,
// external data) stays float, and the report says why.
//
// int8 rounding keeps every output channel's weight sum (RoundSum, the
// default: data-free bias correction, see quantizeInt8); per-channel scales
// are stored as uint8 codes times one step (codeScales) or as fp16 behind a
// Cast, rounded up so no weight overflows. With opset >= 13 (or per tensor
// from 10) a weight W becomes q (int8) and s feeding DequantizeLinear → W,
// with a zero point where it raises the weight's SNR by asymMinGainDB (or
// everywhere with Asymmetric);
// before that, Cast(q) · s with s shaped to broadcast along the channel
// axis, so the model's opset never changes. New tensors are initializers of
// the graph the weight lived in (Constant nodes before IR version 4); new
// nodes go first in that graph's node list and have no names, new values
// short ones.
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
	Mode       Mode     `json:"mode"`        // zero = int8
	PerChannel bool     `json:"per_channel"` // int8 only; callers normally pass true
	Rounding   Rounding `json:"rounding"`    // int8 only; zero = RoundSum
	// Asymmetric gives int8 weights a zero point per channel (or tensor),
	// mapping [min, max] instead of [-max|x|, max|x|] onto the 256 levels:
	// up to twice the resolution for skewed weights (all-positive filter
	// banks, channels offset by folded BatchNorm). It needs
	// DequantizeLinear with a per-axis zero point (opset >= 13; per tensor
	// >= 10); on older opsets weights stay symmetric.
	Asymmetric bool `json:"asymmetric"`
	// Symmetric turns the automatic zero points off: by default (neither
	// flag) a weight gets zero points when they raise its reconstruction
	// SNR by at least 1 dB (asymMinGainDB), where the opset allows them.
	Symmetric bool `json:"symmetric"`
	// KeepNames keeps the model's value names. By default every value but
	// the model's inputs and outputs gets a short name (names.go): long
	// exporter names are stored twice per value and can be a fifth of an
	// int8 model. Node names are kept either way.
	KeepNames   bool  `json:"keep_names"`
	MinElements int   `json:"min_elements"` // weights with fewer elements are left as float; zero means 1024
	MaxBytes    int64 `json:"max_bytes"`    // models above this size are refused; zero means 2 GiB
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

// Progress is reported once after reading, once per tensor considered (as
// Layer), and once after writing. Done and Total count work: the bytes of
// the tensors considered, plus a twentieth of them for reading and one for
// writing.
type Progress struct {
	Done    int64  `json:"done"`
	Total   int64  `json:"total"`
	Stage   string `json:"stage"`
	Message string `json:"message"`
}

// Result summarizes a run.
type Result struct {
	SizeBefore, SizeAfter int64
	CompressionRatio      float64 // SizeBefore / SizeAfter
	TensorsQuantized      int     // weights stored in the mode's format
	TensorsSkipped        int     // weights kept in higher precision (Layer.Kept says why)
	TensorsHalf           int     // other tensors (biases, small ones) stored as fp16
	MaxAbsError           float64
	MeanSNRdB             float64 // mean over quantized tensors; capped at MaxSNRdB each
	Layers                []Layer // every tensor considered, in graph order
	ValuesRenamed         int     // values given short names (Options.KeepNames off)
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
