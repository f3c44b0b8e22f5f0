package session

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Limits of the exec runner's output handling.
const (
	maxLine       = 64 << 10 // longest stdout line parsed; longer ones are cut in the log
	stderrTail    = 4 << 10  // bytes of stderr kept for session.failed error.detail
	maxMetrics    = 64       // result metrics kept from a runner
	readerLinger  = 2 * time.Second
	envPrefix     = "ROBOT_AGENT_"
	envSessionID  = "ROBOT_AGENT_SESSION_ID"
	envOutputDir  = "ROBOT_AGENT_OUTPUT_DIR"
	envModel      = "ROBOT_AGENT_MODEL"
	envParamPfx   = "ROBOT_AGENT_PARAM_"
	placeholderRE = `\{(model|output_dir|session_id|param\.[A-Za-z0-9][A-Za-z0-9._-]*)\}`
)

var placeholder = regexp.MustCompile(placeholderRE)

// execRunner runs a pipeline's argv template as a child process in its own
// process group. It never uses a shell.
type execRunner struct{}

// expandArgv substitutes the placeholders of the argv template. A
// placeholder's value always stays inside the one argument it appears in;
// an argument that is exactly {param.NAME} for a param without a value is
// dropped.
func expandArgv(tmpl []string, job *Job) []string {
	argv := make([]string, 0, len(tmpl))
	for _, a := range tmpl {
		if m := placeholder.FindStringSubmatch(a); m != nil && m[0] == a && strings.HasPrefix(m[1], "param.") {
			if _, ok := job.Params[strings.TrimPrefix(m[1], "param.")]; !ok {
				continue
			}
		}
		argv = append(argv, placeholder.ReplaceAllStringFunc(a, func(ph string) string {
			switch key := ph[1 : len(ph)-1]; key {
			case "model":
				return job.ModelPath
			case "output_dir":
				return job.OutputDir
			case "session_id":
				return job.SessionID
			default:
				v, ok := job.Params[strings.TrimPrefix(key, "param.")]
				if !ok {
					return ""
				}
				return formatParam(v)
			}
		}))
	}
	return argv
}

// checkPlaceholders returns an error naming the first argv element that
// uses a {param.NAME} the pipeline does not declare.
func checkPlaceholders(p *Pipeline) error {
	for i, a := range p.Command {
		for _, m := range placeholder.FindAllStringSubmatch(a, -1) {
			name, ok := strings.CutPrefix(m[1], "param.")
			if !ok {
				continue
			}
			if !slicesContainsParam(p.Params, name) {
				return fmt.Errorf("command[%d]: placeholder {param.%s} names no declared param", i, name)
			}
		}
	}
	return nil
}

func slicesContainsParam(ps []Param, name string) bool {
	for i := range ps {
		if ps[i].Name == name {
			return true
		}
	}
	return false
}

// childEnv is the agent's environment without its own ROBOT_AGENT_*
// settings (they may hold broker credentials), plus the pipeline's env and
// the session's variables.
func childEnv(job *Job) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	for k, v := range job.Pipeline.Env {
		env = append(env, k+"="+v)
	}
	env = append(env,
		envSessionID+"="+job.SessionID,
		envOutputDir+"="+job.OutputDir,
		envModel+"="+job.ModelPath,
	)
	for k, v := range job.Params {
		env = append(env, envParamPfx+strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(k))+"="+formatParam(v))
	}
	return env
}

// progressLine is one line of the exec progress protocol.
type progressLine struct {
	Progress *float64 `json:"progress"`
	Stage    string   `json:"stage"`
	Message  string   `json:"message"`
	EtaS     *float64 `json:"eta_s"`
	Result   *struct {
		Metrics map[string]float64 `json:"metrics"`
	} `json:"result"`
}

func (execRunner) Run(ctx context.Context, job *Job, report func(Update)) (Outcome, error) {
	argv := expandArgv(job.Pipeline.Command, job)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = job.Dir
	cmd.Env = childEnv(job)
	// Own process group, so a cancel reaches grandchildren too; Pdeathsig
	// so the child dies with the agent (the journal handles the rest; see
	// startProcess for why a dedicated thread starts it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	// Our own pipes rather than cmd.StdoutPipe: Wait must not wait for a
	// grandchild that keeps the pipe open after the child exits.
	outR, outW, err := os.Pipe()
	if err != nil {
		return Outcome{}, fmt.Errorf("exec: stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return Outcome{}, fmt.Errorf("exec: stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	if err := startProcess(cmd); err != nil {
		for _, f := range []*os.File{outR, outW, errR, errW} {
			f.Close()
		}
		return Outcome{}, &RunError{Code: protocol.FailRunnerError, Message: fmt.Sprintf("start %q", argv[0]), Err: err}
	}
	outW.Close()
	errW.Close()
	pgid := cmd.Process.Pid
	if job.Started != nil {
		job.Started(pgid)
	}

	var (
		readers sync.WaitGroup
		mu      sync.Mutex // guards metrics
		metrics map[string]float64
		tail    = newTail(stderrTail)
	)
	readers.Add(2)
	go func() {
		defer readers.Done()
		readLines(outR, func(line []byte, cut bool) {
			if !cut {
				if pl, ok := parseProgress(line); ok {
					if pl.Progress != nil {
						report(Update{Percent: clampPercent(*pl.Progress), Stage: pl.Stage, Message: pl.Message, EtaS: pl.EtaS})
					}
					if pl.Result != nil {
						mu.Lock()
						metrics = boundMetrics(pl.Result.Metrics)
						mu.Unlock()
					}
					return
				}
			}
			_, _ = job.Log.Write(line)
			if cut {
				_, _ = io.WriteString(job.Log, " [line cut]")
			}
			_, _ = io.WriteString(job.Log, "\n")
		})
	}()
	go func() {
		defer readers.Done()
		_, _ = io.Copy(io.MultiWriter(job.Log, tail), errR)
	}()

	stopped, waitErr := awaitGroup(ctx, cmd, pgid, job.CancelGrace, &readers, outR, errR)
	outR.Close()
	errR.Close()

	code := exitCode(cmd.ProcessState)
	mu.Lock()
	out := Outcome{Metrics: metrics, ExitCode: code}
	mu.Unlock()
	switch {
	case stopped:
		return out, &RunError{Message: "stopped", Detail: tail.String(), ExitCode: code, Err: context.Cause(ctx)}
	case waitErr != nil:
		msg := fmt.Sprintf("%s exited: %v", argv[0], waitErr)
		return out, &RunError{Code: protocol.FailRunnerError, Message: msg, Detail: tail.String(), ExitCode: code}
	}
	return out, nil
}

// awaitGroup waits for cmd, the leader of process group pgid, to exit, or
// when ctx ends stops the group (stopGroup). Whatever the child left behind
// in its group goes with it. Then it waits for the pipe readers: they end
// at EOF once every holder of the pipes is gone, but a process outside the
// group that inherited them must not hold the session forever, so past
// readerLinger the pipes are closed. It reports whether it stopped the
// group, and the leader's Wait error.
func awaitGroup(ctx context.Context, cmd *exec.Cmd, pgid int, grace time.Duration, readers *sync.WaitGroup, pipes ...io.Closer) (stopped bool, waitErr error) {
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case waitErr = <-waitDone:
	case <-ctx.Done():
		stopped = true
		waitErr = stopGroup(pgid, grace, waitDone)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(readerLinger):
		for _, p := range pipes {
			p.Close()
		}
		<-done
	}
	return stopped, waitErr
}

// stopGroup sends SIGTERM to the group, waits up to grace for the leader
// and then for the rest of the group, and sends SIGKILL to whatever is
// left. It returns the leader's Wait error.
func stopGroup(pgid int, grace time.Duration, waitDone <-chan error) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case err := <-waitDone:
		// The leader is reaped; give the rest of the group what is left
		// of the grace period.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for groupAlive(pgid) {
			select {
			case <-timer.C:
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				return err
			case <-tick.C:
			}
		}
		return err
	case <-timer.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return <-waitDone
	}
}

func exitCode(ps *os.ProcessState) *int {
	if ps == nil {
		return nil
	}
	c := ps.ExitCode() // -1 when killed by a signal
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		c = 128 + int(ws.Signal())
	}
	return &c
}

// parseProgress recognizes a line of the progress protocol.
func parseProgress(line []byte) (progressLine, bool) {
	line = bytes.TrimSpace(line)
	if len(line) < 2 || line[0] != '{' {
		return progressLine{}, false
	}
	var pl progressLine
	if err := json.Unmarshal(line, &pl); err != nil || (pl.Progress == nil && pl.Result == nil) {
		return progressLine{}, false
	}
	if pl.Progress != nil && (math.IsNaN(*pl.Progress) || math.IsInf(*pl.Progress, 0)) {
		return progressLine{}, false
	}
	if pl.EtaS != nil && (*pl.EtaS < 0 || math.IsNaN(*pl.EtaS) || math.IsInf(*pl.EtaS, 0)) {
		pl.EtaS = nil
	}
	pl.Stage = clip(pl.Stage, 128)
	pl.Message = clip(pl.Message, 1024)
	return pl, true
}

func clampPercent(p float64) float64 { return math.Max(0, math.Min(100, p)) }

func boundMetrics(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, min(len(m), maxMetrics))
	for k, v := range m {
		if len(out) == maxMetrics {
			break
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || len(k) > 128 {
			continue
		}
		out[k] = v
	}
	return out
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// readLines calls fn with each line of r (without the newline); lines over
// maxLine are cut (cut=true) and their rest skipped.
func readLines(r io.Reader, fn func(line []byte, cut bool)) {
	br := bufio.NewReaderSize(r, maxLine)
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if !skipping {
				fn(line, true)
			}
			skipping = true
			continue
		case len(line) > 0 && !skipping:
			fn(bytes.TrimRight(line, "\r\n"), false)
		}
		skipping = false
		if err != nil {
			return
		}
	}
}

// tailBuf keeps the last n bytes written to it.
type tailBuf struct {
	mu  sync.Mutex // guards buf
	n   int
	buf []byte
}

func newTail(n int) *tailBuf { return &tailBuf{n: n} }

func (t *tailBuf) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(p) >= t.n {
		t.buf = append(t.buf[:0], p[len(p)-t.n:]...)
		return len(p), nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.n; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns the tail as valid UTF-8 (a sequence cut at the start is
// dropped).
func (t *tailBuf) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	for len(b) > 0 && b[0]&0xC0 == 0x80 {
		b = b[1:]
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
