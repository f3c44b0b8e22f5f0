package relay_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// TestMosquittoRestart: /readyz goes false while the broker is down and
// true again after it is back; the subscription is restored (new events
// flow) and the caches stay consistent (no duplicates from retained
// redelivery, snapshot intact).
func TestMosquittoRestart(t *testing.T) {
	// Mosquitto started as root drops to user mosquitto, which cannot write
	// its persistence file into the test's private temp dir; stay root so
	// retained messages survive the restart as on a real deployment.
	m := brokertest.StartMosquitto(t, brokertest.Options{Extra: "user root"})
	cfg := testConfig()
	cfg.MQTT.Broker = m.URL()
	r := startRelay(t, cfg)
	readyz := func() int {
		code, _ := httpGet(t, "http://"+r.Addr()+"/readyz")
		return code
	}
	require.Equal(t, http.StatusOK, readyz())

	rb := newRobot(t, m.URL(), "r-1")
	st := rb.send("", status("online"))
	ss := rb.send("s-1", sessionState(protocol.StatusRunning))
	c := connect(t, r, "")
	c.subscribe("robot:r-1")
	require.Eventually(t, func() bool { return len(c.subscribe("robot:r-1").Snapshot) == 2 }, wait, 20*time.Millisecond)

	m.Stop()
	require.Eventually(t, func() bool { return readyz() == http.StatusServiceUnavailable }, wait, 20*time.Millisecond)
	require.Equal(t, float64(0), metricValue(t, r.Addr(), "fleet_relay_mqtt_ready"))
	m.Start()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", m.Log())
		}
	})
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, wait, 20*time.Millisecond)
	require.GreaterOrEqual(t, r.IngestStats().Reconnects.Load(), int64(1))

	// Retained status and state came again on re-subscribe: de-duplicated.
	require.Eventually(t, func() bool { return r.Hub().Stats().Duplicates.Load() >= 2 }, wait, 20*time.Millisecond)
	// New events flow through the restored subscription.
	rb2 := newRobot(t, m.URL(), "r-1")
	rb2.seq = rb.seq
	after := rb2.send("", notification("after restart"))
	fs := c.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == after.ID })
	require.Equal(t, ids(after), eventIDs(t, fs), "no duplicates of the retained messages")
	f := c.subscribe("robot:r-1")
	require.Equal(t, ids(st, ss), snapshotIDs(t, f))
}

func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	_, body := httpGet(t, "http://"+addr+"/metrics")
	var v float64
	for _, line := range splitLines(body) {
		if n, _ := fmtSscanf(line, name+" %g", &v); n == 1 {
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
