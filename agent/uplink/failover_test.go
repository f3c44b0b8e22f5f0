package uplink_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/agent/uplink"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/tcpproxy"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

// statusWithEpoch returns a Will/Online/Offline func that stamps the epoch.
func statusWithEpoch(state, reason string) func(int64) []byte {
	return func(e int64) []byte {
		b, err := protocol.Encode(protocol.NewEvent(robot, protocol.RobotStatus{State: state, Reason: reason, AgentVersion: "test", StartedAt: protocol.Now(), Epoch: e}))
		if err != nil {
			panic(err)
		}
		return b
	}
}

func startOpts(t *testing.T, o uplink.Options) *harness {
	t.Helper()
	out, err := spool.Open(spool.Options{Path: filepath.Join(t.TempDir(), "spool.db")})
	require.NoError(t, err)
	o.ClientID, o.StatusTopic = robot, topics.Status(robot)
	o.Will, o.Online, o.Offline = statusWithEpoch("offline", "lost"), statusWithEpoch("online", ""), statusWithEpoch("offline", "shutdown")
	if o.NextEpoch == nil {
		var n atomic.Int64
		o.NextEpoch = func() int64 { return n.Add(1) }
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	o.KeepAlive, o.Logger = 2*time.Second, slog.New(slog.DiscardHandler)
	o.BackoffMin, o.BackoffFastMax = 50*time.Millisecond, 200*time.Millisecond
	up, err := uplink.New(o, out)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{out: out, up: up, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- up.Run(ctx) }()
	t.Cleanup(func() { h.stop(t); out.Close() })
	return h
}

func statuses(t *testing.T, r *recorder) []protocol.RobotStatus {
	var out []protocol.RobotStatus
	for _, ev := range r.events(t) {
		out = append(out, ev.Data.(protocol.RobotStatus))
	}
	return out
}

// Every connection attempt takes a new epoch; the Will and the online
// status of one connection carry the same one. A cut connection's Will
// (fired by the broker) has a lower epoch than the next online status.
func TestEpochNumbersConnections(t *testing.T) {
	b := brokertest.StartMochi(t)
	p, err := tcpproxy.New(b.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	sub := subscribe(t, b.URL(), "watch", false, topics.Status(robot))
	h := startOpts(t, uplink.Options{Brokers: []string{"tcp://" + p.Addr()}})
	require.Eventually(t, h.up.Connected, 10*time.Second, 10*time.Millisecond)
	first := h.up.Stats().Epoch
	require.Positive(t, first)
	require.Eventually(t, func() bool {
		st := statuses(t, sub)
		return len(st) > 0 && st[len(st)-1].State == "online" && st[len(st)-1].Epoch == first
	}, 10*time.Second, 10*time.Millisecond)

	p.Cut() // the broker sees the connection reset: it publishes the Will
	require.Eventually(t, func() bool { return !h.up.Connected() }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // a few refused attempts, each its own epoch
	p.Restore()
	require.Eventually(t, h.up.Connected, 10*time.Second, 10*time.Millisecond)
	second := h.up.Stats().Epoch
	require.Greater(t, second, first+1, "refused attempts consumed epochs too")
	require.Eventually(t, func() bool {
		st := statuses(t, sub)
		return len(st) > 0 && st[len(st)-1].State == "online" && st[len(st)-1].Epoch == second
	}, 10*time.Second, 10*time.Millisecond)
	var will *protocol.RobotStatus
	for _, s := range statuses(t, sub) {
		if s.State == "offline" && s.Reason == "lost" {
			will = &s
		}
	}
	require.NotNil(t, will, "the broker published the cut connection's Will")
	require.Equal(t, first, will.Epoch, "the Will carries its own connection's epoch")
	require.GreaterOrEqual(t, h.up.Stats().Attempts, second-first+1)

	h.stop(t)
	require.Eventually(t, func() bool {
		st := statuses(t, sub)
		return st[len(st)-1].State == "offline" && st[len(st)-1].Reason == "shutdown" && st[len(st)-1].Epoch == second
	}, 10*time.Second, 10*time.Millisecond, "the shutdown status carries the live connection's epoch")
}

// With two brokers, stopping the one in use moves the uplink to the other:
// status and spooled events go there, nothing is lost.
func TestFailoverBetweenTwoBrokers(t *testing.T) {
	m1, m2 := brokertest.StartMosquitto(t), brokertest.StartMosquitto(t)
	sub2 := subscribe(t, m2.URL(), "relay-sim-2", false, topics.Notifications(robot))
	st2 := subscribe(t, m2.URL(), "status-2", false, topics.Status(robot))
	h := startOpts(t, uplink.Options{Brokers: []string{m1.URL(), m2.URL()}})
	require.Eventually(t, func() bool { return h.up.Stats().Broker == m1.URL() }, 10*time.Second, 10*time.Millisecond, "the first broker of the list is tried first")

	m1.Stop()
	require.NoError(t, h.out.Emit(note(1)))
	require.Eventually(t, func() bool { return h.up.Stats().Broker == m2.URL() }, 15*time.Second, 10*time.Millisecond, "fails over to the second broker")
	require.Eventually(t, func() bool { return len(uniq(sub2.events(t))) == 1 }, 10*time.Second, 10*time.Millisecond, "the spooled event reaches the second broker")
	require.Eventually(t, func() bool {
		st := statuses(t, st2)
		return len(st) > 0 && st[len(st)-1].State == "online" && st[len(st)-1].Epoch == h.up.Stats().Epoch
	}, 10*time.Second, 10*time.Millisecond)

	// Back: the second broker goes away, the first is there again.
	m1.Start()
	m2.Stop()
	require.Eventually(t, func() bool { return h.up.Stats().Broker == m1.URL() }, 15*time.Second, 10*time.Millisecond)
}
