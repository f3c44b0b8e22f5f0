package relay_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/natstest"
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
