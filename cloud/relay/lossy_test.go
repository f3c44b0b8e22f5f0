package relay_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// TestLossyBehindClient: a client that falls behind gets robot.metrics
// latest-only and session.progress dropped with a dropped notice, without
// being disconnected.
func TestLossyBehindClient(t *testing.T) {
	cfg := testConfig()
	cfg.WS.QueueBytes = 256 << 10
	// This client does not read, so it cannot answer pings: keep the
	// heartbeat out of the way however long the filling takes.
	cfg.WS.Heartbeat, cfg.WS.ClientGrace = time.Minute, time.Minute
	r := startRelay(t, cfg)
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	conn, _, err := d.Dial(wsURL(r), nil)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.WriteJSON(map[string]any{"op": "subscribe", "room": "robot:r-1"}))
	require.NoError(t, conn.WriteJSON(map[string]any{"op": "subscribe", "room": "session:s-1"}))
	require.Eventually(t, func() bool { return r.Hub().Counts().Subscriptions == 2 }, wait, 10*time.Millisecond)

	rb := newRobot(t, r.BrokerURL(), "r-1")
	stats := r.WSStats()
	// Stop reading; fill the socket and then the queue past half its cap
	// with notifications (never dropped).
	// One message at a time, each seen by a fast probe client in the same
	// room before the next: then the hub has queued it for this client too,
	// and the queue stops just past half its cap (an overshoot would pass
	// the cap and close the client as a slow consumer).
	probe := connect(t, r, "")
	probe.subscribe("robot:r-1")
	big := strings.Repeat("n", 8000)
	for i := 0; stats.Queues.Bytes.Load() <= int64(cfg.WS.QueueBytes/2); i++ {
		require.Less(t, i, 5000, "queue never filled")
		id := rb.send("", notification(big)).ID
		probe.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == id })
	}
	// Wait until the writer is stuck (the queue stops shrinking), so that what
	// follows stays queued rather than trickling out through the socket.
	stuck := 0
	for last := stats.Queues.Bytes.Load(); stuck < 3; {
		time.Sleep(100 * time.Millisecond)
		if now := stats.Queues.Bytes.Load(); now == last {
			stuck++
		} else {
			stuck, last = 0, now
		}
	}
	// Metrics: latest-only, one queued frame per robot and room.
	var lastMetrics *protocol.Event
	for i := 0; i < 20; i++ {
		lastMetrics = rb.send("", metrics())
	}
	require.Eventually(t, func() bool { return stats.Queues.Replaced.Load() >= 18 }, wait, 10*time.Millisecond)
	// Progress: dropped, counted per room.
	for i := 0; i < 5; i++ {
		rb.send("s-1", progress(float64(i)))
	}
	require.Eventually(t, func() bool { return stats.Queues.Dropped.Load() >= 10 }, wait, 10*time.Millisecond,
		"5 progress frames in each of robot:r-1 and session:s-1")
	require.Zero(t, stats.SlowCloses.Load())

	// Reading again, the client finds one metrics frame (the latest) and the
	// dropped notices, and stays connected.
	c := startReading(t, conn)
	var metricsIDs []string
	dropped := map[string]int{}
	c.until(func(f frame) bool {
		switch f.Type {
		case "event":
			if ev := f.envelope(t); ev.Type == protocol.TypeRobotMetrics {
				metricsIDs = append(metricsIDs, ev.ID)
			} else {
				require.NotEqual(t, protocol.TypeSessionProgress, ev.Type, "progress was dropped")
			}
		case "dropped":
			dropped[f.Room] += f.Count
		}
		return dropped["robot:r-1"] == 5 && dropped["session:s-1"] == 5
	})
	c.send(`{"op":"ping","ref":"alive"}`)
	c.until(func(f frame) bool {
		if f.Type == "event" && f.envelope(t).Type == protocol.TypeRobotMetrics {
			metricsIDs = append(metricsIDs, f.envelope(t).ID)
		}
		return f.Type == "pong"
	})
	require.Equal(t, []string{lastMetrics.ID}, metricsIDs, "latest-only")
}
