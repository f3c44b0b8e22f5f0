package relay_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/natstest"
	"github.com/robotfleet/fleetlink/internal/tcpproxy"
	"github.com/robotfleet/fleetlink/protocol"
)

// With a JetStream history the stream is the live path for the events it
// keeps, so what the broker took from a robot reaches the dashboard even
// when the relay's MQTT subscription never sees it (NATS's MQTT gateway was
// seen to skip a QoS 1 delivery now and then, docs/RELIABILITY.md). Here
// the relay's MQTT is its embedded broker and the robot publishes on NATS:
// only the stream links them. Live from MQTT, none of these would arrive.
func TestLiveEventsComeFromTheHistoryStream(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	cfg := testConfig()
	cfg.NATS.URLs = []string{c.NATSURLs()}
	cfg.NATS.Username, cfg.NATS.Password = natstest.RelayUser, natstest.RelayPassword
	r := startRelay(t, cfg)
	ws := connect(t, r, "")
	ws.subscribe("robot:r-1")

	rb := newRobot(t, c.Nodes[0].MQTTURL(), "r-1", "r-1", natstest.RobotPassword("r-1"))
	rb.send("", status("online"))
	const n = 30
	var want []string
	for i := 0; i < n; i++ {
		want = append(want, rb.send("s-1", progress(float64(i))).ID)
	}
	var got []string
	ws.until(func(f frame) bool {
		if f.Type == "event" {
			if ev := f.envelope(t); ev.Session == "s-1" {
				got = append(got, ev.ID)
			}
		}
		return len(got) == n
	})
	require.Equal(t, want, got, "session events, in the order the robot published them")

	resp, err := http.Get("http://" + r.Addr() + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Regexp(t, `fleet_relay_history_live_events_total 3[1-9]`, string(body), "live events counted")
}

// With history on, the broker delivers the relay only metrics and replies
// (the stream carries the rest), so it neither sends nor keeps for the
// relay's session what the relay would drop; a `#` subscription an earlier
// run left in the persistent session is unsubscribed.
func TestHistoryRelaySubscribesOnlyWhatMQTTCarries(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	c := natstest.StartCluster(t, 1)
	run := func(history bool) (*relay.Relay, func()) {
		cfg := testConfig()
		cfg.MQTT.Broker, cfg.MQTT.ClientID = m.URL(), "relay-filters"
		if history {
			cfg.NATS.URLs = []string{c.NATSURLs()}
			cfg.NATS.Username, cfg.NATS.Password = natstest.RelayUser, natstest.RelayPassword
		}
		r, err := relay.New(cfg, testLogger(t))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = r.Run(ctx) }()
		require.Eventually(t, r.Ready, wait, 10*time.Millisecond)
		return r, func() { cancel(); <-done }
	}
	_, stop := run(false) // leaves `fleet/v1/robots/#` in the session
	stop()
	r, stop := run(true)
	defer stop()
	rb := newRobot(t, m.URL(), "r-1")
	for range 5 {
		rb.send("", notification("not for MQTT"))
	}
	rb.raw(protocol.MustTopics("").Metrics("r-1"), 0, true, mustEncode(t, rb.event("", metrics())))
	require.Eventually(t, func() bool { return r.IngestStats().MessagesIn.Load() >= 1 }, wait, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.EqualValues(t, 1, r.IngestStats().MessagesIn.Load(), "the broker delivered what the stream carries")
}

func mustEncode(t *testing.T, ev *protocol.Event) []byte {
	t.Helper()
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	return b
}

// historyRelay starts a relay on its embedded broker with the JetStream
// history of natsURL, so every robot event it shows came through the
// stream.
func historyRelay(t *testing.T, natsURL string) *relay.Relay {
	t.Helper()
	return startRelay(t, historyConfig(natsURL))
}

func historyConfig(natsURL string) config.Config {
	cfg := testConfig()
	cfg.NATS.URLs = []string{natsURL}
	cfg.NATS.Username, cfg.NATS.Password = natstest.RelayUser, natstest.RelayPassword
	return cfg
}

// natsProxy is a tcpproxy in front of the first node's NATS client port,
// for cutting the relay's history connection.
func natsProxy(t *testing.T, c *natstest.Cluster) *tcpproxy.Proxy {
	t.Helper()
	px, err := tcpproxy.New(fmt.Sprintf("127.0.0.1:%d", c.Nodes[0].ClientPort))
	require.NoError(t, err)
	t.Cleanup(func() { _ = px.Close() })
	return px
}

// A stolen robot credential cannot speak for another robot through the
// stream: NATS refuses r-1 publishing on r-2's subjects over MQTT and
// refuses r-1 over plain NATS altogether, and an envelope r-1 publishes on
// its own topic in r-2's name is stored by the stream but refused by the relay's ingest.
func TestStolenRobotCannotSpeakForAnotherThroughTheStream(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	r := historyRelay(t, c.NATSURLs())
	admin := connect(t, r, "")
	admin.subscribe("fleet")

	r1 := newRobot(t, c.Nodes[0].MQTTURL(), "r-1", "r-1", natstest.RobotPassword("r-1"))
	forged := protocol.NewEvent("r-2", status("online"))
	forged.Seq = 99
	b := mustEncode(t, forged)
	// Over MQTT on r-2's topic: NATS drops it (and may close the client).
	_ = r1.c.Publish(protocol.MustTopics("").Status("r-2"), 1, true, b).WaitTimeout(2 * time.Second)
	// Over plain NATS with r-1's password: robot accounts are MQTT only
	// (allowed_connection_types), so it cannot reach the gateway's own
	// $MQTT subjects (sessions, retained messages) or the stream's API.
	nc, err := nats.Connect(c.NATSURLs(), nats.UserInfo("r-1", natstest.RobotPassword("r-1")), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
	}
	require.Error(t, err, "a robot account connected over plain NATS")
	// On its own topic, in r-2's name.
	r1 = newRobot(t, c.Nodes[0].MQTTURL(), "r-1", "r-1", natstest.RobotPassword("r-1"))
	r1.raw(protocol.MustTopics("").Status("r-1"), 1, true, b)
	marker := r1.send("", status("online"))

	fs := admin.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == marker.ID })
	require.Equal(t, map[string]int{"r-1": 1}, robotsOf(t, fs), "r-2's forged status reached the fleet room")
	require.Eventually(t, func() bool { return r.IngestStats().Invalid.Load() >= 1 }, wait, 10*time.Millisecond,
		"the envelope in r-2's name on r-1's topic was not refused")
	_, known := r.Hub().RobotState("r-2")
	require.False(t, known, "the relay knows a robot r-2 from r-1's forgery")
}

// The relay's connection to NATS is cut mid-stream for 3 s while a robot
// keeps publishing: the stream keeps what the broker took, the relay's
// consumer resumes where it was, and the dashboard gets every event once,
// in order.
func TestHistoryConnectionCutMidStream(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	px := natsProxy(t, c)
	r := historyRelay(t, "nats://"+px.Addr())
	ws := connect(t, r, "")
	ws.subscribe("session:s-cut")

	rb := newRobot(t, c.Nodes[0].MQTTURL(), "r-1", "r-1", natstest.RobotPassword("r-1"))
	const n = 40
	var want []string
	for i := 0; i < n; i++ {
		if i == n/2 {
			px.Cut()
		}
		want = append(want, rb.send("s-cut", progress(float64(i))).ID)
		if i >= n/2 && i < n/2+10 {
			time.Sleep(300 * time.Millisecond) // 3 s of publishing into the cut
		}
	}
	require.Positive(t, px.Stats().Dropped, "the relay's NATS connection was not cut")
	px.Restore()
	var got []string
	ws.until(func(f frame) bool {
		if f.Type == "event" {
			got = append(got, f.envelope(t).ID)
		}
		return len(got) >= n
	})
	require.Equal(t, want, got, "every event once, in order, across the cut")
}

// The relay's NATS connection is cut while a robot publishes more than the
// stream keeps (nats.max_bytes), so events leave the stream before the relay
// reads them: every room is told (gap, reason history_dropped) and a resume
// from before the hole answers recovered: false, never a silent hole. After
// it, what the stream still held arrives in order.
func TestHistoryDroppedTellsTheRooms(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	px := natsProxy(t, c)
	cfg := historyConfig("nats://" + px.Addr())
	cfg.NATS.MaxBytes = 16 << 10
	r := startRelay(t, cfg)
	ws := connect(t, r, "")
	ws.subscribe("session:s-drop")

	rb := newRobot(t, c.Nodes[0].MQTTURL(), "r-1", "r-1", natstest.RobotPassword("r-1"))
	pad := fmt.Sprintf("%0500d", 0)
	ev := func(i int) protocol.SessionProgress {
		p := progress(float64(i))
		p.Message = pad
		return p
	}
	before := rb.send("s-drop", ev(0))
	ws.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == before.ID })

	px.Cut()
	var sent []string
	for i := 1; i <= 80; i++ { // ~60 kB into a 16 KiB stream: the oldest unread leave it
		sent = append(sent, rb.send("s-drop", ev(i)).ID)
	}
	require.Positive(t, px.Stats().Dropped, "the relay's NATS connection was not cut")
	px.Restore()

	var gap struct{ Room, Reason string }
	var after []string
	ws.until(func(f frame) bool {
		switch f.Type {
		case "gap":
			require.NoError(t, json.Unmarshal(f.raw, &gap))
		case "event":
			require.NotEmpty(t, gap.Reason, "an event after the cut arrived before the gap notice: %s", f.raw)
			after = append(after, f.envelope(t).ID)
		}
		return len(after) > 0 && after[len(after)-1] == sent[len(sent)-1]
	})
	require.Equal(t, "session:s-drop", gap.Room)
	require.Equal(t, "history_dropped", gap.Reason)
	require.Less(t, len(after), len(sent), "nothing left the stream: the test did not overflow it")
	require.Equal(t, sent[len(sent)-len(after):], after, "what the stream kept arrives once, in order")

	late := connect(t, r, "")
	f := late.subscribe("session:s-drop", before.Seq)
	require.False(t, f.Recovered, "a resume across the dropped events said recovered: %s", f.raw)
}
