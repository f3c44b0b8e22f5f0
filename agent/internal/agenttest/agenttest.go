// Package agenttest runs the real robot-agent binary in tests: Binary builds
// it once per test binary (go build, CGO off, like the release), Start runs
// it as a child process with a config and environment, and Stop (SIGTERM),
// Kill (SIGKILL) and Wait end it. Output is kept for failure messages.
package agenttest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// ModuleRoot returns the repository root (the directory of go.mod).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		t.Fatalf("agenttest: cannot find go.mod: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// Binary builds cmd/robot-agent once per test binary into
// bin/.agenttest/ and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root := ModuleRoot(t)
		dir := filepath.Join(root, "bin", ".agenttest")
		if buildErr = os.MkdirAll(dir, 0o755); buildErr != nil {
			return
		}
		// Build under a per-process name, then rename: test binaries of
		// several packages may build at the same time.
		tmp := filepath.Join(dir, fmt.Sprintf("robot-agent.%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, "./cmd/robot-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/robot-agent: %v\n%s", err, out)
			return
		}
		// Rename over the shared name: atomic, and a binary another test
		// process is running keeps its inode.
		buildPath = filepath.Join(dir, "robot-agent")
		buildErr = os.Rename(tmp, buildPath)
	})
	if buildErr != nil {
		t.Fatalf("agenttest: %v", buildErr)
	}
	return buildPath
}

// Options says how to start the agent.
type Options struct {
	// Broker URL (ROBOT_AGENT_MQTT_BROKER). Required for `run`.
	Broker string
	// RobotID (ROBOT_AGENT_ROBOT_ID). Default "r-test".
	RobotID string
	// StateDir (ROBOT_AGENT_STATE_DIR). Default: a new t.TempDir().
	StateDir string
	// Config is YAML written to a file passed with --config. Empty: no file.
	Config string
	// Env adds KEY=VALUE pairs (after the defaults, so they win).
	Env []string
	// Args replace the default ["run"] (plus --config when Config is set).
	Args []string
}

// Agent is a running robot-agent child process.
type Agent struct {
	t        testing.TB
	Cmd      *exec.Cmd
	StateDir string
	RobotID  string
	out      *syncBuffer
	done     chan struct{}
	err      error // exit error, set before done is closed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start starts the agent. It is killed at the end of the test if still
// running, and its output is logged when the test failed.
func Start(t testing.TB, o Options) *Agent {
	t.Helper()
	bin := Binary(t)
	if o.RobotID == "" {
		o.RobotID = "r-test"
	}
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	args := o.Args
	if args == nil {
		args = []string{"run"}
	}
	if o.Config != "" {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(o.Config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", p)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"ROBOT_AGENT_ROBOT_ID=" + o.RobotID,
		"ROBOT_AGENT_STATE_DIR=" + o.StateDir,
		// Tests want quick reconnects and quick metrics.
		"ROBOT_AGENT_MQTT_RECONNECT_MIN=100ms",
		"ROBOT_AGENT_MQTT_RECONNECT_MAX=500ms",
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
		"ROBOT_AGENT_LOG_LEVEL=debug",
	}
	if o.Broker != "" {
		env = append(env, "ROBOT_AGENT_MQTT_BROKER="+o.Broker)
	}
	env = append(env, o.Env...)
	a := &Agent{t: t, StateDir: o.StateDir, RobotID: o.RobotID, out: &syncBuffer{}, done: make(chan struct{})}
	a.Cmd = exec.Command(bin, args...)
	a.Cmd.Env = env
	a.Cmd.Stdout, a.Cmd.Stderr = a.out, a.out
	a.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.Cmd.Start(); err != nil {
		t.Fatalf("agenttest: start robot-agent: %v", err)
	}
	go func() {
		a.err = a.Cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			t.Logf("robot-agent output:\n%s", a.Output())
		}
	})
	return a
}

// Output returns what the agent wrote to stdout and stderr so far.
func (a *Agent) Output() string { return a.out.String() }

// Exited reports whether the process has exited.
func (a *Agent) Exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal); it fails the test on timeout.
func (a *Agent) Wait(timeout time.Duration) int {
	a.t.Helper()
	select {
	case <-a.done:
	case <-time.After(timeout):
		a.t.Fatalf("agenttest: robot-agent still running after %s\n%s", timeout, a.Output())
	}
	var ee *exec.ExitError
	if errors.As(a.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// Stop sends SIGTERM and waits (15 s) for the exit code.
func (a *Agent) Stop() int {
	a.t.Helper()
	if !a.Exited() {
		_ = a.Cmd.Process.Signal(syscall.SIGTERM)
	}
	return a.Wait(15 * time.Second)
}

// Kill sends SIGKILL and waits for the process to be gone.
func (a *Agent) Kill() {
	if !a.Exited() {
		_ = a.Cmd.Process.Kill()
	}
	<-a.done
}

// Run runs the binary to completion with args and env (KEY=VALUE) and
// returns stdout, stderr and the exit code.
func Run(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("agenttest: %v", err)
		}
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("agenttest: robot-agent %v did not exit in 30s\n%s%s", args, o.String(), e.String())
	}
	return o.String(), e.String(), code
}
