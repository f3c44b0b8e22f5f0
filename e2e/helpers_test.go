// Package e2e tests the whole system as its users run it: the real
// fleet-relay and robot-agent binaries, the relay's embedded broker, real
// WebSocket clients and a real browser.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, b := range []string{"fleet-relay", "robot-agent", "fleetctl"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../cmd/"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a binary running under a test, its output kept for failures.
type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
	mu  *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func start(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &bytes.Buffer{}, mu: &sync.Mutex{}}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = lockedWriter{p.mu, p.out}
	p.cmd.Stderr = lockedWriter{p.mu, p.out}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// system is a relay on its embedded broker plus agents.
type system struct {
	httpAddr, mqttAddr string
	models             string
}

func startRelay(t *testing.T, extraEnv ...string) *system {
	t.Helper()
	s := &system{
		httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		mqttAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)),
	}
	env := append([]string{"FLEET_RELAY_LISTEN=" + s.httpAddr, "FLEET_RELAY_MQTT_BROKER=",
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=" + s.mqttAddr, "FLEET_RELAY_AUTH_SECRET="}, extraEnv...)
	start(t, "fleet-relay", env)
	eventually(t, 20*time.Second, "relay /readyz 200", func() bool {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

// startAgent runs a robot-agent against the system's broker with the sample models.
func (s *system) startAgent(t *testing.T, robot string) *proc {
	t.Helper()
	if s.models == "" {
		s.models = t.TempDir()
		cmd := exec.Command("go", "run", "../agent/onnxq/internal/testmodels/genmodels", "-big=false", s.models)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("genmodels: %v\n%s", err, out)
		}
	}
	return start(t, "robot-agent", []string{
		"ROBOT_AGENT_ROBOT_ID=" + robot,
		"ROBOT_AGENT_MQTT_BROKER=tcp://" + s.mqttAddr,
		"ROBOT_AGENT_STATE_DIR=" + t.TempDir(),
		"ROBOT_AGENT_MODEL_DIRS=" + s.models,
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
	}, "run")
}

func eventually(t testing.TB, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wsClient is a dashboard client of /ws.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dial(t *testing.T, s *system) *wsClient {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+s.httpAddr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	w := &wsClient{t: t, conn: c}
	if f := w.next(5 * time.Second); f["type"] != "connected" {
		t.Fatalf("first frame %v, want connected", f)
	}
	return w
}

func (w *wsClient) send(v any) {
	w.t.Helper()
	if err := w.conn.WriteJSON(v); err != nil {
		w.t.Fatalf("ws write: %v", err)
	}
}

func (w *wsClient) next(d time.Duration) map[string]any {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(d))
	_, b, err := w.conn.ReadMessage()
	if err != nil {
		w.t.Fatalf("ws read: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		w.t.Fatalf("ws frame not JSON: %v: %s", err, b)
	}
	return f
}

// waitFor reads frames until match returns true.
func (w *wsClient) waitFor(d time.Duration, what string, match func(map[string]any) bool) map[string]any {
	w.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			w.t.Fatalf("timed out waiting for %s", what)
		}
		f := w.next(left)
		if match(f) {
			return f
		}
	}
}
