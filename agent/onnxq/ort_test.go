package onnxq

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
)

// The ONNX Runtime tests run scripts/ort/verify.js under node. They fail
// (never skip) when the runtime is missing, except under -short.

type verdict struct {
	Loaded     bool    `json:"loaded"`
	Cosine     float64 `json:"cosine"`
	MaxAbsDiff float64 `json:"max_abs_diff"`
	Identical  bool    `json:"identical"`
	Error      string  `json:"error"`
}

func ortDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "ort")
	if testing.Short() {
		t.Skip("ONNX Runtime checks skipped under -short")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node not found in PATH: install Node.js >= 20, then run scripts/ort/install.sh")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "onnxruntime-node", "package.json")); err != nil {
		t.Fatalf("onnxruntime-node is not installed in %s: run scripts/ort/install.sh", dir)
	}
	return dir
}

func verify(t *testing.T, dir, orig, opt string) verdict {
	t.Helper()
	cmd := exec.Command("node", filepath.Join(dir, "verify.js"), orig, opt, "7")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var v verdict
	if jerr := json.Unmarshal(bytes.TrimSpace(out), &v); jerr != nil {
		t.Fatalf("verify.js: %v (output %q, stderr %q, parse %v)", err, out, stderr.String(), jerr)
	}
	if err != nil || !v.Loaded {
		t.Fatalf("ONNX Runtime could not run %s: %s %s", filepath.Base(opt), v.Error, stderr.String())
	}
	return v
}

func TestORT(t *testing.T) {
	dir := ortDir(t)
	tmp := t.TempDir()
	paths, err := testmodels.WriteAll(tmp, 42)
	if err != nil {
		t.Fatal(err)
	}
	modes := []struct {
		name      string
		opts      Options
		minCosine float64
		maxRatio  float64
	}{
		{"int8_channel", Options{Mode: ModeInt8, PerChannel: true}, 0.9998, 0.3},
		{"int8_channel_nearest", Options{Mode: ModeInt8, PerChannel: true, Rounding: RoundNearest}, 0.9998, 0.3},
		{"int8_channel_asym", Options{Mode: ModeInt8, PerChannel: true, Asymmetric: true}, 0.9998, 0.3},
		{"int8_tensor", Options{Mode: ModeInt8}, 0.999, 0.3},
		{"fp16", Options{Mode: ModeFP16}, 0.9999, 0.55},
	}
	// Opset 9 has no DequantizeLinear: exercise the Cast+Mul-only path too.
	specs := append(testmodels.All(), testmodels.Spec{Name: "matmul_opset9", Opset: 9, Build: testmodels.MatMulModel, WeightDominated: true})
	if err := os.WriteFile(filepath.Join(tmp, "matmul_opset9.onnx"), testmodels.MatMulModel(9, 42), 0o644); err != nil {
		t.Fatal(err)
	}
	paths["matmul_opset9"] = filepath.Join(tmp, "matmul_opset9.onnx")
	// The graph shapes of real exporters: RNNs, weights in If and Loop
	// bodies, sliced weights shared by subgraphs, embeddings, ConvTranspose.
	for _, s := range testmodels.Shapes() {
		paths[s.Name] = filepath.Join(tmp, s.Name+".onnx")
		if err := os.WriteFile(paths[s.Name], s.Build(s.Opset, 42), 0o644); err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	for _, spec := range specs {
		orig := paths[spec.Name]
		t.Run(spec.Name+"/roundtrip", func(t *testing.T) {
			t.Parallel()
			data, _ := os.ReadFile(orig)
			rt := filepath.Join(tmp, spec.Name+".roundtrip.onnx")
			if err := os.WriteFile(rt, unchanged(t, data), 0o644); err != nil {
				t.Fatal(err)
			}
			if v := verify(t, dir, orig, rt); !v.Identical {
				t.Errorf("round-tripped model gives different outputs: %+v", v)
			}
		})
		for _, m := range modes {
			t.Run(spec.Name+"/"+m.name, func(t *testing.T) {
				t.Parallel()
				opt := filepath.Join(tmp, fmt.Sprintf("%s.%s.onnx", spec.Name, m.name))
				res, err := QuantizeFile(context.Background(), orig, opt, m.opts, nil)
				if err != nil {
					t.Fatal(err)
				}
				v := verify(t, dir, orig, opt)
				ratio := float64(res.SizeAfter) / float64(res.SizeBefore)
				t.Logf("cosine %.6f max|Δ| %.4g size ×%.3f quantized %d skipped %d SNR %.1f dB",
					v.Cosine, v.MaxAbsDiff, ratio, res.TensorsQuantized, res.TensorsSkipped, res.MeanSNRdB)
				if v.Cosine < m.minCosine {
					t.Errorf("cosine %.6f < %g", v.Cosine, m.minCosine)
				}
				if spec.WeightDominated && ratio > m.maxRatio {
					t.Errorf("size ratio %.3f > %g", ratio, m.maxRatio)
				}
			})
		}
	}
}
