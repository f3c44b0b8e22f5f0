package relay_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/protocol"
)

const wait = 10 * time.Second

// testConfig returns a config for tests: loopback ports chosen by the
// kernel, short timers.
func testConfig() config.Config {
	c := config.Default()
	c.Listen = "127.0.0.1:0"
	c.Embedded.Listen = "127.0.0.1:0"
	c.WS.Heartbeat = time.Second
	c.WS.ClientGrace = 2 * time.Second
	c.MQTT.ReconnectMin = 50 * time.Millisecond
	c.MQTT.ReconnectMax = 500 * time.Millisecond
	c.MQTT.ConnectTimeout = 2 * time.Second
	c.SystemStatusInterval = time.Hour
	c.ShutdownTimeout = 3 * time.Second
	c.Log.Level = "warn"
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startRelay starts a relay with cfg and waits until it is ready.
func startRelay(t testing.TB, cfg config.Config) *relay.Relay {
	t.Helper()
	r, err := relay.New(cfg, testLogger(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(15 * time.Second):
			t.Errorf("relay did not stop")
		}
	})
	require.Eventually(t, r.Ready, wait, 10*time.Millisecond, "relay never became ready")
	return r
}

// brokerURL returns where simulated robots connect.
func brokerURL(r *relay.Relay, cfg config.Config) string {
	if cfg.MQTT.Broker != "" {
		return cfg.MQTT.Broker
	}
	return r.BrokerURL()
}

// robot is a simulated robot: a plain MQTT client publishing envelopes as
// any MQTT client would.
type robot struct {
	t      testing.TB
	id     string
	c      mqtt.Client
	topics protocol.Topics
	seq    int64
}

func newRobot(t testing.TB, url, id string, user ...string) *robot {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("sim-" + id + "-" + protocol.NewID()[20:]).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	if len(user) == 2 {
		o.SetUsername(user[0]).SetPassword(user[1])
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait), "robot %s connect timeout", id)
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(50) })
	return &robot{t: t, id: id, c: c, topics: protocol.MustTopics("")}
}

// event returns a new event of the robot with the next seq.
func (r *robot) event(session string, d protocol.Data) *protocol.Event {
	r.seq++
	ev := protocol.NewEvent(r.id, d)
	ev.Session = session
	ev.Seq = r.seq
	return ev
}

// publish publishes ev on its topic (QoS and retain from the contract) and
// waits for the broker's acknowledgement.
func (r *robot) publish(ev *protocol.Event) {
	r.t.Helper()
	b, err := protocol.Encode(ev)
	require.NoError(r.t, err)
	topic, err := r.topics.For(ev)
	require.NoError(r.t, err)
	info, _ := protocol.Lookup(ev.Type)
	r.raw(topic, info.QoS, info.Retained, b)
}

func (r *robot) raw(topic string, qos byte, retained bool, b []byte) {
	r.t.Helper()
	tok := r.c.Publish(topic, qos, retained, b)
	require.True(r.t, tok.WaitTimeout(wait))
	require.NoError(r.t, tok.Error())
}

func (r *robot) send(session string, d protocol.Data) *protocol.Event {
	r.t.Helper()
	ev := r.event(session, d)
	r.publish(ev)
	return ev
}

// Sample data.
func status(state string) protocol.RobotStatus {
	s := protocol.RobotStatus{State: state, AgentVersion: "test", StartedAt: protocol.Now()}
	if state == "offline" {
		s.Reason = "shutdown"
	}
	return s
}

func metrics() protocol.RobotMetrics {
	m, _ := protocol.Lookup(protocol.TypeRobotMetrics)
	return m.Example().Data.(protocol.RobotMetrics)
}

func alert(name, state string) protocol.RobotAlert {
	return protocol.RobotAlert{Alert: name, Severity: "warning", State: state, Message: "m", Value: 90, Threshold: 85}
}

func notification(msg string) protocol.RobotNotification {
	return protocol.RobotNotification{Level: "info", Title: "t", Message: msg}
}

func progress(p float64) protocol.SessionProgress {
	return protocol.SessionProgress{Percent: p, Stage: "quantize", ElapsedS: 1}
}

func sessionState(st string) protocol.SessionState {
	s := protocol.SessionState{Status: st, Pipeline: "quantize-int8", Model: "m.onnx", CreatedAt: protocol.Now()}
	switch st {
	case protocol.StatusCompleted:
		s.Result = &protocol.SessionResult{Artifacts: []protocol.Artifact{}}
	case protocol.StatusFailed:
		s.Error = &protocol.ErrorInfo{Code: "internal", Message: "x"}
	}
	return s
}

func queued() protocol.SessionQueued {
	return protocol.SessionQueued{Pipeline: "quantize-int8", Model: "m.onnx", Position: 0}
}

func completed() protocol.SessionCompleted {
	return protocol.SessionCompleted{DurationS: 1, Result: protocol.SessionResult{Artifacts: []protocol.Artifact{}}}
}

// frame is one relay → client frame.
type frame struct {
	Type      string            `json:"type"`
	Room      string            `json:"room"`
	Event     json.RawMessage   `json:"event"`
	Recovered bool              `json:"recovered"`
	Snapshot  []json.RawMessage `json:"snapshot"`
	Code      string            `json:"code"`
	Message   string            `json:"message"`
	Ref       json.RawMessage   `json:"ref"`
	Count     int               `json:"count"`
	OK        bool              `json:"ok"`
	Result    json.RawMessage   `json:"result"`
	Error     json.RawMessage   `json:"error"`
	ClientID  string            `json:"client_id"`
	Heartbeat float64           `json:"heartbeat_s"`
	raw       []byte
}

func (f frame) envelope(t testing.TB) *protocol.Event {
	t.Helper()
	ev, err := protocol.Decode(f.Event)
	require.NoError(t, err, "event frame %s", f.raw)
	return ev
}

// wsClient is a real WebSocket client reading in the background.
type wsClient struct {
	t      testing.TB
	conn   *websocket.Conn
	frames chan frame
	done   chan struct{}
	mu     sync.Mutex
	err    error // the read error that ended the reader
}

func wsURL(r *relay.Relay) string { return "ws://" + r.Addr() + "/ws" }

func dial(t testing.TB, r *relay.Relay, token string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := wsURL(r)
	if token != "" {
		u += "?token=" + token
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(u, hdr)
}

// connect dials /ws and starts reading; the first frame must be connected.
func connect(t testing.TB, r *relay.Relay, token string) *wsClient {
	t.Helper()
	conn, resp, err := dial(t, r, token, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	require.NoError(t, err)
	c := startReading(t, conn)
	f := c.next()
	require.Equal(t, "connected", f.Type, "first frame: %s", f.raw)
	return c
}

func startReading(t testing.TB, conn *websocket.Conn) *wsClient {
	t.Helper()
	c := &wsClient{t: t, conn: conn, frames: make(chan frame, 100000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			var f frame
			if json.Unmarshal(b, &f) != nil {
				f.Type = "!invalid-json"
			}
			f.raw = b
			c.frames <- f
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return c
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, ok := v.([]byte)
	if !ok {
		if s, isStr := v.(string); isStr {
			b = []byte(s)
		} else {
			var err error
			b, err = json.Marshal(v)
			require.NoError(c.t, err)
		}
	}
	require.NoError(c.t, c.conn.WriteMessage(websocket.TextMessage, b))
}

// next returns the next frame or fails after wait.
func (c *wsClient) next() frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(wait):
		c.t.Fatalf("no frame within %s", wait)
	}
	return frame{}
}

// until returns frames up to and including the first that matches.
func (c *wsClient) until(match func(frame) bool) []frame {
	c.t.Helper()
	var out []frame
	deadline := time.After(wait)
	for {
		select {
		case f := <-c.frames:
			out = append(out, f)
			if match(f) {
				return out
			}
		case <-deadline:
			c.t.Fatalf("no matching frame within %s; got %d frames, last: %s", wait, len(out), lastRaw(out))
			return nil
		}
	}
}

func lastRaw(fs []frame) string {
	if len(fs) == 0 {
		return "none"
	}
	return string(fs[len(fs)-1].raw)
}

func (c *wsClient) subscribe(room string, since ...int64) frame {
	c.t.Helper()
	op := map[string]any{"op": "subscribe", "room": room}
	if len(since) > 0 {
		op["since_seq"] = since[0]
	}
	c.send(op)
	fs := c.until(func(f frame) bool { return (f.Type == "subscribed" && f.Room == room) || f.Type == "error" })
	f := fs[len(fs)-1]
	require.Equal(c.t, "subscribed", f.Type, "subscribe %s: %s", room, f.raw)
	return f
}

// eventIDs returns the ids of the event frames among fs (in order).
func eventIDs(t testing.TB, fs []frame) []string {
	t.Helper()
	var ids []string
	for _, f := range fs {
		if f.Type == "event" {
			ids = append(ids, f.envelope(t).ID)
		}
	}
	return ids
}

// closeErr waits for the reader to end and returns its error.
func (c *wsClient) closeErr() error {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(wait):
		c.t.Fatalf("connection not closed within %s", wait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func ids(evs ...*protocol.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func snapshotTypes(t testing.TB, f frame) []string {
	t.Helper()
	var out []string
	for _, raw := range f.Snapshot {
		ev, err := protocol.Decode(raw)
		require.NoError(t, err)
		out = append(out, ev.Type)
	}
	return out
}

func snapshotIDs(t testing.TB, f frame) []string {
	t.Helper()
	var out []string
	for _, raw := range f.Snapshot {
		ev, err := protocol.Decode(raw)
		require.NoError(t, err)
		out = append(out, ev.ID)
	}
	return out
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func newRelayNoCleanup(t testing.TB, cfg config.Config) (*relay.Relay, error) {
	t.Helper()
	return relay.New(cfg, testLogger(t))
}

func splitLines(s string) []string { return strings.Split(s, "\n") }

func fmtSscanf(s, format string, args ...any) (int, error) { return fmt.Sscanf(s, format, args...) }

func newRobotTLS(t testing.TB, url, id string, pool *x509.CertPool) *robot {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("sim-" + id).SetTLSConfig(&tls.Config{RootCAs: pool}).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(50) })
	return &robot{t: t, id: id, c: c, topics: protocol.MustTopics("")}
}
