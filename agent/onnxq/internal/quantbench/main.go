// The quantbench program measures the built-in quantizer on one generated
// model: throughput over the model's bytes and the process's peak RSS during
// the quantization alone (the high-water mark is reset before each run). It
// prints a markdown section; scripts/bench/onnxq.sh runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/robotfleet/fleetlink/agent/onnxq"
	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

func main() {
	width := flag.Int64("width", 2048, "MLP width: weights are width²·layers·4 bytes")
	layers := flag.Int("layers", 2, "Gemm layers")
	repeat := flag.Int("repeat", 3, "runs per mode; the fastest is reported")
	flag.Parse()
	if err := bench(*width, *layers, *repeat); err != nil {
		fmt.Fprintln(os.Stderr, "quantbench:", err)
		os.Exit(1)
	}
}

type result struct {
	seconds, mbPerS, compression, maxAbsErr, snr float64
	peakRSS, rssBefore                           int64
}

func bench(width int64, layers, repeat int) error {
	dir, err := os.MkdirTemp("", "quantbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in.onnx")
	data := testmodels.Big(17, 1, width, layers)
	if err := os.WriteFile(in, data, 0o644); err != nil {
		return err
	}
	size := len(data)
	data = nil
	fmt.Printf("## onnxq\n\nThe built-in `onnx-quantize` runner on a generated MLP with %d %d×%d Gemm weights (%.1f MB). "+
		"Peak RSS is the process's high-water mark during the quantization alone (reset before each run); fastest of %d runs.\n\n",
		layers, width, width, float64(size)/1e6, repeat)
	fmt.Println("| mode | MB/s | seconds | peak RSS | RSS before | compression | max abs error | mean SNR |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, m := range []struct {
		name string
		opts onnxq.Options
	}{
		{"int8 per channel", onnxq.Options{Mode: onnxq.ModeInt8, PerChannel: true}},
		{"int8 per tensor", onnxq.Options{Mode: onnxq.ModeInt8}},
		{"fp16", onnxq.Options{Mode: onnxq.ModeFP16}},
	} {
		var best result
		for i := 0; i < repeat; i++ {
			r, err := run(in, filepath.Join(dir, "out.onnx"), size, m.opts)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			if best.seconds == 0 || r.seconds < best.seconds {
				best = r
			}
		}
		fmt.Printf("| %s | %.0f | %.3f | %.0f MiB | %.0f MiB | %.2f× | %.4g | %.1f dB |\n", m.name, best.mbPerS, best.seconds,
			float64(best.peakRSS)/(1<<20), float64(best.rssBefore)/(1<<20), best.compression, best.maxAbsErr, best.snr)
	}
	fmt.Printf("\nCommand: `go run ./agent/onnxq/internal/quantbench -width %d -layers %d` (via `scripts/bench/onnxq.sh`).\n", width, layers)
	return nil
}

func run(in, out string, size int, opts onnxq.Options) (result, error) {
	debug.FreeOSMemory()
	base := vm("VmRSS")
	// "5" resets the peak RSS to the current RSS (Linux clear_refs).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return result{}, fmt.Errorf("reset peak RSS: %w", err)
	}
	start := time.Now()
	res, err := onnxq.QuantizeFile(context.Background(), in, out, opts, nil)
	if err != nil {
		return result{}, err
	}
	secs := time.Since(start).Seconds()
	return result{seconds: secs, mbPerS: float64(size) / 1e6 / secs, peakRSS: vm("VmHWM"), rssBefore: base,
		compression: res.CompressionRatio, maxAbsErr: res.MaxAbsError, snr: res.MeanSNRdB}, nil
}

// vm reads a kB field of /proc/self/status in bytes.
func vm(field string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}
