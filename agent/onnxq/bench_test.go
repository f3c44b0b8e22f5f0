package onnxq

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

// BenchmarkQuantizeFile quantizes a ~34 MB MLP (two 2048×2048 Gemm weights)
// generated at bench time. MB/s is over the input size; peak-RSS-MB is the
// process high-water mark (it includes generating the model).
func BenchmarkQuantizeFile(b *testing.B) {
	dir := b.TempDir()
	in := filepath.Join(dir, "big.onnx")
	data := testmodels.Big(17, 1, 2048, 2)
	if err := os.WriteFile(in, data, 0o644); err != nil {
		b.Fatal(err)
	}
	size := int64(len(data))
	data = nil
	for _, m := range []struct {
		name string
		opts Options
	}{
		{"int8_channel", Options{Mode: ModeInt8, PerChannel: true}},
		{"int8_channel_nearest", Options{Mode: ModeInt8, PerChannel: true, Rounding: RoundNearest}},
		{"int8_tensor", Options{Mode: ModeInt8}},
		{"fp16", Options{Mode: ModeFP16}},
	} {
		b.Run(m.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			out := filepath.Join(dir, m.name+".onnx")
			for b.Loop() {
				if _, err := QuantizeFile(context.Background(), in, out, m.opts, nil); err != nil {
					b.Fatal(err)
				}
			}
			if kb := peakRSSKB(); kb > 0 {
				b.ReportMetric(float64(kb)/1024, "peak-RSS-MB")
			}
		})
	}
}

func peakRSSKB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
