package socketio

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

var testSecret = []byte("socketio-test-secret")

// env is a hub with a Socket.IO server on httptest, auth on.
type env struct {
	hub *hub.Hub
	srv *Server
	ts  *httptest.Server
}

// start serves a Server with test-friendly timings; edit tweaks its options.
func start(t *testing.T, edit func(*Options)) *env {
	t.Helper()
	return startHTTP(t, edit, nil)
}

// startHTTP is start with a hook on the HTTP server's settings.
func startHTTP(t *testing.T, edit func(*Options), httpEdit func(*http.Server)) *env {
	t.Helper()
	h := hub.New(hub.Options{})
	a, err := auth.New(auth.Options{Secret: testSecret})
	require.NoError(t, err)
	o := Options{Hub: h, Auth: a, PingInterval: 300 * time.Millisecond, PingTimeout: 2 * time.Second,
		ConnectTimeout: 5 * time.Second, UpgradeTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	if edit != nil {
		edit(&o)
	}
	srv, err := New(o)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	ts := httptest.NewUnstartedServer(mux)
	if httpEdit != nil {
		httpEdit(ts.Config)
	}
	ts.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		ts.Close()
	})
	return &env{hub: h, srv: srv, ts: ts}
}

// token mints a token of role for robots.
func token(t *testing.T, role auth.Role, robots ...string) string {
	t.Helper()
	if len(robots) == 0 {
		robots = []string{"*"}
	}
	tok, err := auth.Mint(testSecret, auth.MintOptions{Role: role, Robots: robots, TTL: time.Hour})
	require.NoError(t, err)
	return tok
}

// ingest feeds the hub a protocol-valid event of typ (the catalog's example
// with the given robot, session and seq), as the relay's MQTT ingest would.
func ingest(t *testing.T, h *hub.Hub, typ, robot, session string, seq int64, edit func(*protocol.Event)) *protocol.Event {
	t.Helper()
	ti, ok := protocol.Lookup(typ)
	require.True(t, ok, typ)
	ev := ti.Example()
	ev.ID, ev.Robot, ev.Seq, ev.TS = protocol.NewID(), robot, seq, protocol.Now()
	if protocol.IsSessionType(typ) {
		ev.Session = session
	}
	if edit != nil {
		edit(ev)
	}
	raw, err := protocol.Encode(ev)
	require.NoError(t, err)
	dec, err := protocol.Decode(raw)
	require.NoError(t, err)
	require.True(t, h.Ingest(dec, raw, false))
	return dec
}

// line is one JSON line the node driver printed.
type line struct {
	Type      string          `json:"type"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Ref       string          `json:"ref"`
	Transport string          `json:"transport"`
	Reason    string          `json:"reason"`
	Message   string          `json:"message"`
	raw       string
}

// envelope decodes the data of an event line as an envelope.
func (l line) envelope(t *testing.T) *protocol.Event {
	t.Helper()
	ev, err := protocol.Decode(l.Data)
	require.NoError(t, err, "event %s: %s", l.Event, l.Data)
	return ev
}

// driver runs scripts/sio/drive.js with the real socket.io-client.
type driver struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan line

	mu  sync.Mutex // guards log
	log []string

	pending []line // read but not yet matched, in order; test goroutine only
}

// sioDir returns scripts/sio, failing the test when node or the npm
// packages are missing.
func sioDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../scripts/sio")
	require.NoError(t, err)
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: run scripts/test-deps.sh (as root it installs nodejs and the npm packages)")
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socket.io-client", "package.json")); err != nil {
		t.Fatalf("socket.io-client is not installed in %s: run scripts/test-deps.sh (npm ci there)", dir)
	}
	return dir
}

func newDriver(t *testing.T) *driver {
	t.Helper()
	dir := sioDir(t)
	cmd := exec.Command("node", filepath.Join(dir, "drive.js"))
	cmd.Stderr = &testWriter{t: t}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	d := &driver{t: t, stdin: stdin, lines: make(chan line, 1024)}
	go func() {
		defer close(d.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = line{Type: "unparsed"}
			}
			l.raw = sc.Text()
			d.mu.Lock()
			d.log = append(d.log, l.raw)
			d.mu.Unlock()
			d.lines <- l
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return d
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("node: %s", strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// send writes one command to the driver.
func (d *driver) send(cmd map[string]any) {
	d.t.Helper()
	b, err := json.Marshal(cmd)
	require.NoError(d.t, err)
	_, err = d.stdin.Write(append(b, '\n'))
	require.NoError(d.t, err)
}

// next returns the first line that match accepts and has not been returned
// yet; lines it passes over stay for later calls. It fails the test after
// 10 s.
func (d *driver) next(what string, match func(line) bool) line {
	d.t.Helper()
	for i, l := range d.pending {
		if match(l) {
			d.pending = append(d.pending[:i], d.pending[i+1:]...)
			return l
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				d.t.Fatalf("driver exited while waiting for %s; it printed:\n%s", what, d.printed())
			}
			if match(l) {
				return l
			}
			d.pending = append(d.pending, l)
		case <-timeout:
			d.t.Fatalf("no %s within 10s; the driver printed:\n%s", what, d.printed())
		}
	}
}

// nextEvent returns the next event line, whatever its name.
func (d *driver) nextEvent() line {
	d.t.Helper()
	return d.next("event", func(l line) bool { return l.Type == "event" })
}

// event returns the next event line named name, skipping others.
func (d *driver) event(name string) line {
	d.t.Helper()
	return d.next("event "+name, func(l line) bool { return l.Type == "event" && l.Event == name })
}

func (d *driver) ack(ref string) line {
	d.t.Helper()
	return d.next("ack "+ref, func(l line) bool { return (l.Type == "ack" || l.Type == "ack_timeout") && l.Ref == ref })
}

func (d *driver) printed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.log, "\n")
}

// connect connects and waits for the connect line (or fails).
func (d *driver) connect(url, tok string, transports []string) line {
	d.t.Helper()
	cmd := map[string]any{"op": "connect", "url": url, "token": tok}
	if transports != nil {
		cmd["transports"] = transports
	}
	d.send(cmd)
	return d.next("connect", func(l line) bool { return l.Type == "connect" || l.Type == "connect_error" })
}

func (d *driver) emit(ref, event string, arg any) {
	d.t.Helper()
	d.send(map[string]any{"op": "emit", "ref": ref, "event": event, "arg": arg, "ack": true})
}

func decodeJSON[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(b, &v), "%s", b)
	return v
}
