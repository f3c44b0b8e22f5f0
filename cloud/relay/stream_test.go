package relay_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/natstest"
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
