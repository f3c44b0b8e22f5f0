// Package brokertest starts real MQTT brokers for tests: mochi-mqtt
// in-process and Mosquitto as a child process, each on a free loopback port,
// stopped by t.Cleanup. A missing Mosquitto fails the test (never skips):
// `make test` installs it.
package brokertest

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/robotfleet/fleetlink/internal/mochiclose"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until something accepts connections on addr.
func WaitPort(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Mochi is an in-process mochi-mqtt broker that allows every client.
type Mochi struct {
	Server *mqtt.Server
	Addr   string // host:port
}

// URL returns tcp://host:port.
func (m *Mochi) URL() string { return "tcp://" + m.Addr }

// StartMochi starts an in-process broker on a free port.
func StartMochi(t testing.TB) *Mochi {
	t.Helper()
	// Warnings only: mochi's per-client INFO lines drown test output.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: logger})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatalf("mochi: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "t1", Address: addr})); err != nil {
		t.Fatalf("mochi listener: %v", err)
	}
	go func() { _ = srv.Serve() }()
	WaitPort(t, addr, 5*time.Second)
	t.Cleanup(func() { _ = mochiclose.Close(srv) })
	return &Mochi{Server: srv, Addr: addr}
}

// Mosquitto is a Mosquitto broker run as a child process. Stop and Start
// restart it on the same port, keeping retained messages and sessions
// (persistence is on), as a real broker restart would.
type Mosquitto struct {
	t       testing.TB
	Port    int
	WSPort  int // MQTT over WebSocket listener, 0 when not asked for
	dir     string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	logFile string
}

// Options tunes StartMosquitto.
type Options struct {
	// WebSockets adds an MQTT-over-WebSocket listener (WSPort).
	WebSockets bool
	// Extra is appended to mosquitto.conf.
	Extra string
	// Config replaces the default access settings (anonymous clients
	// allowed, a large queue), e.g. with Shipped. The listeners and
	// persistence stay the helper's.
	Config string
	// ListenerConfig follows each listener line (Mosquitto 2 scopes some
	// options, such as use_username_as_clientid, to a listener).
	ListenerConfig string
}

// MosquittoPath returns the mosquitto binary, or fails the test saying how
// to install it.
func MosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("mosquitto not found: run `make test-deps` (apt-get install mosquitto)")
	return ""
}

// StartMosquitto starts Mosquitto on free loopback ports.
func StartMosquitto(t testing.TB, opts ...Options) *Mosquitto {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	MosquittoPath(t) // fail early, naming the fix
	m := &Mosquitto{t: t, Port: FreePort(t), dir: t.TempDir()}
	access := o.Config
	if access == "" {
		access = "allow_anonymous true\nmax_queued_messages 100000\n"
	}
	conf := fmt.Sprintf("per_listener_settings false\n%s\npersistence true\npersistence_location %s/\nautosave_interval 1\nlistener %d 127.0.0.1\n%s\n",
		access, m.dir, m.Port, o.ListenerConfig)
	if os.Geteuid() == 0 && !strings.Contains(o.Extra, "user ") && !strings.Contains(o.Config, "\nuser ") {
		// As root Mosquitto drops to user "mosquitto", which cannot write its
		// persistence file into the test's directory: retained messages
		// would not survive a restart.
		conf += "user root\n"
	}
	if o.WebSockets {
		m.WSPort = FreePort(t)
		conf += fmt.Sprintf("listener %d 127.0.0.1\nprotocol websockets\n%s\n", m.WSPort, o.ListenerConfig)
	}
	conf += o.Extra + "\n"
	if err := os.WriteFile(filepath.Join(m.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	m.logFile = filepath.Join(m.dir, "mosquitto.log")
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// URL returns tcp://127.0.0.1:port.
func (m *Mosquitto) URL() string { return "tcp://127.0.0.1:" + strconv.Itoa(m.Port) }

// Addr returns 127.0.0.1:port.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.Port) }

// Start starts the broker (again) and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	logf, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	cmd := exec.Command(MosquittoPath(m.t), "-c", filepath.Join(m.dir, "mosquitto.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.cmd = cmd
	exited := make(chan struct{})
	m.exited = exited
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	WaitPort(m.t, m.Addr(), 10*time.Second)
}

// Stop stops the broker with SIGTERM (it saves its persistence file).
func (m *Mosquitto) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd = nil
	// Wait until the port is free again, so a restart can bind it.
	for i := 0; i < 100; i++ {
		c, err := net.DialTimeout("tcp", m.Addr(), 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the broker wrote to its log so far.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(m.logFile)
	return string(b)
}
