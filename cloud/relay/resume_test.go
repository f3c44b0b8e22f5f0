package relay_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// TestResume: since_seq replays what the ring still holds (recovered true)
// or falls back to the snapshot (recovered false).
func TestResume(t *testing.T) {
	cfg := testConfig()
	cfg.Hub.RingEvents = 5
	r := startRelay(t, cfg)
	rb := newRobot(t, r.BrokerURL(), "r-1")
	var evs []*protocol.Event
	evs = append(evs, rb.send("", status("online")))
	for i := 0; i < 3; i++ {
		evs = append(evs, rb.send("s-1", progress(float64(i))))
	}
	c := connect(t, r, "")
	require.Eventually(t, func() bool { return len(c.subscribe("session:s-1").Snapshot) == 3 }, wait, 10*time.Millisecond)

	// seq 1 is the status; ask for everything after it.
	f := c.subscribe("robot:r-1", evs[0].Seq)
	require.True(t, f.Recovered)
	require.Equal(t, ids(evs[1:]...), snapshotIDs(t, f))
	f = c.subscribe("session:s-1", evs[1].Seq)
	require.True(t, f.Recovered)
	require.Equal(t, ids(evs[2:]...), snapshotIDs(t, f))
	// Up to date: nothing to replay, still recovered.
	f = c.subscribe("robot:r-1", evs[3].Seq)
	require.True(t, f.Recovered)
	require.Empty(t, f.Snapshot)

	// Push the ring (5 events) past the early ones.
	for i := 0; i < 6; i++ {
		evs = append(evs, rb.send("s-1", progress(float64(10+i))))
	}
	last := evs[len(evs)-1]
	c2 := connect(t, r, "")
	require.Eventually(t, func() bool {
		f := c2.subscribe("robot:r-1", last.Seq-1)
		return f.Recovered && len(f.Snapshot) == 1 && snapshotIDs(t, f)[0] == last.ID
	}, wait, 20*time.Millisecond)
	f = c2.subscribe("robot:r-1", evs[1].Seq)
	require.False(t, f.Recovered, "events after seq %d were evicted", evs[1].Seq)
	require.Equal(t, []string{protocol.TypeRobotStatus}, snapshotTypes(t, f), "the snapshot stands in")
	f = c2.subscribe("session:s-1", evs[1].Seq)
	require.False(t, f.Recovered)

	// A robot the relay never saw cannot be recovered.
	f = c2.subscribe("robot:r-new", 0)
	require.False(t, f.Recovered)
}

// TestDedup: a re-sent event (same id: QoS 1 redelivery, spool replay)
// reaches clients once.
func TestDedup(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			b.setup(t, &cfg)
			r := startRelay(t, cfg)
			c := connect(t, r, "")
			c.subscribe("robot:r-1")
			rb := newRobot(t, brokerURL(r, cfg), "r-1")
			ev := rb.event("s-1", progress(1))
			rb.publish(ev)
			rb.publish(ev) // the same envelope again
			end := rb.send("", notification("end"))
			fs := c.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == end.ID })
			require.Equal(t, ids(ev, end), eventIDs(t, fs))
			require.GreaterOrEqual(t, r.Hub().Stats().Duplicates.Load(), int64(1))
		})
	}
}

// TestInvalidMQTTPayloads: bad payloads are counted and never forwarded.
func TestInvalidMQTTPayloads(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			b.setup(t, &cfg)
			r := startRelay(t, cfg)
			c := connect(t, r, "")
			c.subscribe("fleet")
			c.subscribe("robot:r-1")
			c.subscribe("robot:r-2")
			rb := newRobot(t, brokerURL(r, cfg), "r-1")
			tp := protocol.MustTopics("")
			good, err := protocol.Encode(rb.event("", status("online")))
			require.NoError(t, err)
			other := newRobot(t, brokerURL(r, cfg), "r-2").event("", status("online"))
			spoof, err := protocol.Encode(other) // r-2's envelope on r-1's topic
			require.NoError(t, err)
			bad := []struct {
				topic   string
				payload string
			}{
				{tp.Status("r-1"), "not json"},
				{tp.Status("r-1"), `{"v":1}`},
				{tp.Metrics("r-1"), string(good)},          // a status on the metrics topic
				{tp.Status("r-1"), string(spoof)},          // a robot speaking for another
				{tp.Alerts("r-1"), `[1,2,3]`},              // not an object
				{"fleet/v1/robots/r 1/status", "{}"},       // bad robot id in the topic
				{tp.Notifications("r-1"), ""},              // empty, not retained kind
				{"fleet/v1/robots/r-1/unknown", `{"x":1}`}, // unknown kind
			}
			for _, x := range bad {
				rb.raw(x.topic, 1, false, []byte(x.payload))
			}
			end := rb.send("", alert("end", "firing"))
			n := 0
			fs := c.until(func(f frame) bool {
				if f.Type == "event" && f.envelope(t).ID == end.ID {
					n++
				}
				return n == 2
			})
			require.Equal(t, ids(end, end), eventIDs(t, fs), "only the valid alert, in fleet and robot:r-1")
			require.Eventually(t, func() bool { return r.IngestStats().Invalid.Load() == int64(len(bad)) }, wait, 10*time.Millisecond,
				"invalid=%d", r.IngestStats().Invalid.Load())
			_, body := httpGet(t, "http://"+r.Addr()+"/metrics")
			require.Contains(t, body, "fleet_relay_messages_invalid_total 8")
		})
	}
}

// TestClearedSessionState: an empty retained session.state removes the
// session from the caches; it is not invalid.
func TestClearedSessionState(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg)
	rb := newRobot(t, r.BrokerURL(), "r-1")
	rb.send("s-1", sessionState(protocol.StatusCompleted))
	require.Eventually(t, func() bool { return r.Hub().Counts().Sessions == 1 }, wait, 10*time.Millisecond)
	rb.raw(protocol.MustTopics("").SessionState("r-1", "s-1"), 1, true, nil)
	require.Eventually(t, func() bool { return r.Hub().Counts().Sessions == 0 }, wait, 10*time.Millisecond)
	require.Zero(t, r.IngestStats().Invalid.Load())
}
