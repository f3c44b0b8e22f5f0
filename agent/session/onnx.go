package session

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/robotfleet/fleetlink/agent/onnxq"
	"github.com/robotfleet/fleetlink/protocol"
)

// onnxRunner is the built-in onnx-quantize runner. It runs onnxq in a child
// process (see onnx_child.go) capped at the pipeline's max_memory_bytes,
// turns the child's JSON lines into progress, and leaves the quantized
// model in the output directory (the one artifact) and the quality report,
// which names the layers result.metrics only numbers, in the session
// directory next to session.log. Params: mode (int8|fp16), per_channel,
// min_elements, rounding (sum|nearest), asymmetric and symmetric (zero
// points on every weight, or on none; by default where they help),
// keep_names (value names as they were; by default short ones).
type onnxRunner struct{}

// quantizeReport is the quality report's file name in the session directory.
const quantizeReport = "quantize-report.json"

// defaultMaxMemory is the quantizer's memory cap when the pipeline sets
// none and the machine's RAM is unknown; otherwise the default is half the
// RAM.
const defaultMaxMemory = 2 << 30

// quantizeMaxMemory returns the memory cap of one quantizer child.
func quantizeMaxMemory(p *Pipeline) int64 {
	if p != nil && p.MaxMemoryBytes > 0 {
		return p.MaxMemoryBytes
	}
	if ram := physicalMemory(); ram > 0 {
		return ram / 2
	}
	return defaultMaxMemory
}

// quantizeOptions reads the runner's params (checked against the
// pipeline's declarations before they get here).
func quantizeOptions(params map[string]any) onnxq.Options {
	opts := onnxq.Options{Mode: onnxq.ModeInt8, PerChannel: true}
	if v, ok := params["mode"].(string); ok {
		opts.Mode = onnxq.Mode(v)
	}
	if v, ok := params["per_channel"].(bool); ok {
		opts.PerChannel = v
	}
	if v, ok := toFloat(params["min_elements"]); ok {
		opts.MinElements = int(v)
	}
	if v, ok := params["rounding"].(string); ok {
		opts.Rounding = onnxq.Rounding(v)
	}
	if v, ok := params["asymmetric"].(bool); ok {
		opts.Asymmetric = v
	}
	if v, ok := params["symmetric"].(bool); ok {
		opts.Symmetric = v
	}
	if v, ok := params["keep_names"].(bool); ok {
		opts.KeepNames = v
	}
	return opts
}

func (onnxRunner) Run(ctx context.Context, job *Job, report func(Update)) (Outcome, error) {
	opts := quantizeOptions(job.Params)
	if opts.Asymmetric && opts.Symmetric {
		return Outcome{}, &RunError{Code: protocol.FailRunnerError,
			Message: "params asymmetric and symmetric are both true: choose zero points on every weight or on none"}
	}
	base := strings.TrimSuffix(filepath.Base(job.ModelPath), filepath.Ext(job.ModelPath))
	out := filepath.Join(job.OutputDir, base+"."+string(opts.Mode)+".onnx")
	req := childRequest{
		In: job.ModelPath, Out: out, Opts: opts, MaxMemory: quantizeMaxMemory(job.Pipeline),
		Report: filepath.Join(job.Dir, quantizeReport),
	}
	fmt.Fprintf(job.Log, "onnx-quantize: %s -> %s mode=%s per_channel=%t min_elements=%d rounding=%s asymmetric=%t symmetric=%t keep_names=%t max_memory=%d\n",
		job.ModelPath, out, opts.Mode, opts.PerChannel, opts.MinElements, opts.Rounding, opts.Asymmetric, opts.Symmetric, opts.KeepNames, req.MaxMemory)
	// The quantizer holds the whole file in memory: a model larger than
	// the cap cannot fit, so say so without starting the child.
	if st, err := os.Stat(job.ModelPath); err == nil && st.Size() > req.MaxMemory {
		msg := fmt.Sprintf("model is %d bytes, above the pipeline's max_memory_bytes (%d): the quantizer holds the whole model in memory",
			st.Size(), req.MaxMemory)
		fmt.Fprintf(job.Log, "onnx-quantize: %s\n", msg)
		return Outcome{}, &RunError{Code: protocol.FailRunnerError, Message: msg}
	}
	metrics, err := runQuantizeChild(ctx, job, req, report)
	if err != nil {
		removeTemps(out)
		if re := asRunError(err); re != nil && re.Message != "stopped" {
			fmt.Fprintf(job.Log, "onnx-quantize: %s\n", re.Message)
		}
		return Outcome{}, err
	}
	fmt.Fprintf(job.Log, "onnx-quantize: done %v\n", metrics)
	return Outcome{Metrics: metrics}, nil
}

// removeTemps deletes the temporary files a killed child may have left next
// to out (onnxq writes ".<name>.tmp-*" and renames it when complete).
func removeTemps(out string) {
	dir, prefix := filepath.Dir(out), "."+filepath.Base(out)+".tmp-"
	ents, _ := os.ReadDir(dir) // not Glob: the model's name may hold * or [
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// quantizeChildCmd builds the child's command: this executable, the hidden
// subcommand, the agent's environment without its ROBOT_AGENT_* settings
// (they may hold broker credentials).
func quantizeChildCmd(job *Job) (*exec.Cmd, error) {
	// /proc/self/exe is the running binary even when an upgrade has
	// replaced (or removed) the file on disk since the agent started: the
	// child always speaks the parent's version of the child protocol.
	exe := "/proc/self/exe"
	if _, err := os.Stat(exe); err != nil {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find the agent's executable: %w", err)
		}
	}
	cmd := exec.Command(exe, QuantizeChildArg)
	cmd.Dir = job.Dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) && !strings.HasPrefix(kv, quantizeChildEnv+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, quantizeChildEnv+"=1")
	// Own process group and Pdeathsig, as for exec runners: a cancel or the
	// agent's death ends it, and the journal can kill it after a crash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// testHookChildRequest, when set (by tests), may change a request before
// it is sent.
var testHookChildRequest func(*childRequest)

// runQuantizeChild runs one child to the end and returns its metrics.
func runQuantizeChild(ctx context.Context, job *Job, req childRequest, report func(Update)) (map[string]float64, error) {
	cmd, err := quantizeChildCmd(job)
	if err != nil {
		return nil, &RunError{Code: protocol.FailInternal, Message: err.Error(), Err: err}
	}
	var files []*os.File // every pipe end, closed on return
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err1 := pipe()
	outR, outW, err2 := pipe()
	errR, errW, err3 := pipe()
	if err := firstErr(err1, err2, err3); err != nil {
		return nil, &RunError{Code: protocol.FailInternal, Message: "quantizer pipes", Err: err}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := startProcess(cmd); err != nil {
		return nil, &RunError{Code: protocol.FailInternal, Message: "start the quantizer process", Err: err}
	}
	inR.Close()
	outW.Close()
	errW.Close()
	pgid := cmd.Process.Pid
	if job.Started != nil {
		job.Started(pgid)
	}
	// The request is far below the pipe's buffer: this never blocks on a
	// child that does not read.
	if testHookChildRequest != nil {
		testHookChildRequest(&req)
	}
	b, _ := json.Marshal(req)
	_, _ = inW.Write(b)
	inW.Close()

	var (
		readers sync.WaitGroup
		mu      sync.Mutex // guards metrics and childErr
		metrics map[string]float64
		cerr    *childError
		tail    = newTail(stderrTail)
		head    = &headBuf{n: stderrTail} // a Go fatal error's first lines; the stack follows
	)
	readers.Add(2)
	go func() {
		defer readers.Done()
		readLines(outR, func(line []byte, cut bool) {
			var l childLine
			if cut || json.Unmarshal(line, &l) != nil {
				_, _ = job.Log.Write(line) // not JSON: chatter for the log
				_, _ = io.WriteString(job.Log, "\n")
				return
			}
			switch {
			case l.Progress != nil:
				report(progressUpdate(*l.Progress))
			case l.Error != nil:
				mu.Lock()
				cerr = l.Error
				mu.Unlock()
			case l.Metrics != nil:
				mu.Lock()
				metrics = boundMetrics(l.Metrics)
				mu.Unlock()
			}
		})
	}()
	go func() {
		defer readers.Done()
		_, _ = io.Copy(io.MultiWriter(job.Log, head, tail), errR)
	}()

	stopped, waitErr := awaitGroup(ctx, cmd, pgid, job.CancelGrace, &readers, outR, errR)

	mu.Lock()
	defer mu.Unlock()
	code := exitCode(cmd.ProcessState)
	switch {
	case stopped:
		return nil, &RunError{Message: "stopped", Err: context.Cause(ctx)}
	case cerr != nil && cerr.InvalidModel:
		return nil, &RunError{Code: protocol.FailInvalidModel, Message: cerr.Message}
	case cerr != nil && cerr.OutOfMemory:
		return nil, &RunError{Code: protocol.FailRunnerError, Message: cerr.Message}
	case cerr != nil:
		return nil, &RunError{Code: protocol.FailInternal, Message: cerr.Message}
	case waitErr == nil && metrics != nil:
		return metrics, nil
	}
	return nil, childDied(waitErr, code, head.String(), tail.String(), req.MaxMemory)
}

// childDied explains a child that ended without a result or an error line.
func childDied(waitErr error, code *int, head, tail string, maxMemory int64) *RunError {
	// A runtime fatal error under the hard cap is out of memory whatever it
	// says (Go may fault instead of reporting the failed mmap); SIGKILL
	// that we did not send is the kernel's OOM killer.
	oom := strings.Contains(head, "fatal error") || strings.Contains(head, "SIGSEGV") ||
		strings.Contains(head, "out of memory") || (code != nil && *code == 128+int(syscall.SIGKILL))
	detail := tail
	if i := strings.Index(head, "fatal error"); i >= 0 {
		detail = head // Go's own report: what failed comes first, then the stacks
	}
	detail = clip(detail, 1024)
	if oom {
		return &RunError{Code: protocol.FailRunnerError, ExitCode: code, Detail: detail,
			Message: fmt.Sprintf("the quantizer process died, most likely out of memory: the model needs more than the pipeline's max_memory_bytes (%d MiB); only this session failed",
				maxMemory>>20)}
	}
	return &RunError{Code: protocol.FailRunnerError, ExitCode: code, Detail: detail,
		Message: fmt.Sprintf("the quantizer process died: %v", waitErr)}
}

// progressUpdate turns the quantizer's progress into a runner update.
func progressUpdate(p onnxq.Progress) Update {
	pct := 0.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	return Update{Percent: clampPercent(pct), Stage: clip(p.Stage, 128), Message: clip(p.Message, 1024)}
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// headBuf keeps the first n bytes written to it.
type headBuf struct {
	mu  sync.Mutex // guards buf
	n   int
	buf []byte
}

func (h *headBuf) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.n - len(h.buf); room > 0 {
		h.buf = append(h.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuf) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.ToValidUTF8(string(h.buf), "\uFFFD")
}
