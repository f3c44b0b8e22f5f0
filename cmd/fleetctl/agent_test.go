package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// The session tests run the real robot-agent binary: agent/internal/agenttest
// does that for the agent's own tests but cannot be imported from here
// (internal to agent/), so this is its small counterpart.

var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

// moduleRoot is the repository root: two levels above this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	return root
}

// agentBinary builds cmd/robot-agent once per test binary.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		root := moduleRoot(t)
		dir := filepath.Join(root, "bin", ".fleetctltest")
		if agentErr = os.MkdirAll(dir, 0o755); agentErr != nil {
			return
		}
		// Build under a per-process name, then rename: test binaries of
		// several packages may build at the same time.
		tmp := filepath.Join(dir, fmt.Sprintf("robot-agent.%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/robot-agent")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build ./cmd/robot-agent: %v\n%s", err, out)
			return
		}
		agentBin = filepath.Join(dir, "robot-agent")
		agentErr = os.Rename(tmp, agentBin)
	})
	require.NoError(t, agentErr)
	return agentBin
}

// agentConfig declares exec pipelines over the example optimizer and the
// agent's test scripts: one that completes, one that fails with stderr,
// one the robot times out.
func agentConfig(t *testing.T, modelDir string) string {
	t.Helper()
	root := moduleRoot(t)
	return fmt.Sprintf(`
alerts:
  rules: []
sessions:
  max_concurrent: 2
  cancel_grace: 500ms
  model_dirs: [%q]
  pipelines:
    - name: fake-optimize
      runner: exec
      command: [%q, "--model", "{model}", "--out", "{output_dir}", "--steps", "{param.steps}"]
      params:
        - {name: steps, type: int, min: 1, max: 10000, default: 5}
        - {name: step_delay, type: float, min: 0, max: 10, default: 0.05}
        - {name: fail, type: bool, default: false}
    - name: fail
      runner: exec
      command: [%q]
    - name: slow
      runner: exec
      command: ["sleep", "30"]
      timeout: 1s
`, modelDir, filepath.Join(root, "scripts/examples/fake-optimizer.sh"), filepath.Join(root, "agent/session/testdata/fail.sh"))
}

// agentProc is a robot-agent child process.
type agentProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startAgent runs robot-agent as robot against broker (a URL list) and
// waits until its retained status says online.
func startAgent(t *testing.T, broker, robot string) *agentProc {
	t.Helper()
	return startAgentWith(t, broker, robot, nil)
}

// startAgentWith is startAgent with more KEY=VALUE environment for the
// agent; watcher is the username and password the wait for its online
// status connects with, when the broker wants one.
func startAgentWith(t *testing.T, broker, robot string, env []string, watcher ...string) *agentProc {
	t.Helper()
	bin := agentBinary(t)
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	require.NoError(t, os.MkdirAll(models, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(models, "m.onnx"), []byte("model-bytes"), 0o644))
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(agentConfig(t, models)), 0o600))

	a := &agentProc{out: &syncBuffer{}, done: make(chan struct{})}
	a.cmd = exec.Command(bin, "run", "--config", cfg)
	a.cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"ROBOT_AGENT_ROBOT_ID=" + robot,
		"ROBOT_AGENT_MQTT_BROKER=" + broker,
		"ROBOT_AGENT_STATE_DIR=" + filepath.Join(dir, "state"),
		"ROBOT_AGENT_MQTT_RECONNECT_MIN=100ms",
		"ROBOT_AGENT_MQTT_RECONNECT_MAX=500ms",
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
	}
	a.cmd.Env = append(a.cmd.Env, env...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, a.cmd.Start())
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(15 * time.Second):
			_ = a.cmd.Process.Kill()
			<-a.done
		}
		if t.Failed() {
			t.Logf("robot-agent %s output:\n%s", robot, a.out.String())
		}
	})
	waitRetained(t, strings.Split(broker, ",")[0], protocol.Topics{}.Status(robot), func(ev *protocol.Event) bool {
		return ev.Data.(protocol.RobotStatus).State == "online"
	}, watcher...)
	return a
}

// waitRetained waits until the retained (or next) message on topic
// satisfies ok.
func waitRetained(t *testing.T, broker, topic string, ok func(*protocol.Event) bool, userPass ...string) {
	t.Helper()
	c := dial(t, broker, "wait-"+randomHex(4), userPass...)
	defer c.Disconnect(100)
	hit := make(chan struct{}, 1)
	tok := c.Subscribe(topic, 1, func(_ mqtt.Client, m mqtt.Message) {
		if ev, err := protocol.Decode(m.Payload()); err == nil && ok(ev) {
			select {
			case hit <- struct{}{}:
			default:
			}
		}
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	select {
	case <-hit:
	case <-time.After(60 * time.Second):
		t.Fatalf("nothing on %s satisfied the wait within 60s", topic)
	}
}
