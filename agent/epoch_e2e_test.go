package agent_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/internal/agenttest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/tcpproxy"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

var connectedEpoch = regexp.MustCompile(`msg="connected to the broker".* epoch=(\d+)`)

// lastConnectedEpoch is the epoch of the agent's latest successful connect, from its log.
func lastConnectedEpoch(a *agenttest.Agent) int64 {
	m := connectedEpoch.FindAllStringSubmatch(a.Output(), -1)
	if len(m) == 0 {
		return 0
	}
	e, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
	return e
}

// Issue 14 item 3: a network blackhole between the agent and Mosquitto.
// The agent's connection attempts during the blackhole are held open by the
// silent network and complete when it ends: Mosquitto accepts them and,
// as they are already abandoned, publishes their Wills — after the agent's
// live connection announced online. Every status carries its connection's
// epoch: every such Will has a lower epoch than the live online status, so a
// receiver that orders a robot's statuses by epoch ends with "online".
func TestBlackholeStaleWillsAreOlderEpochs(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	p, err := tcpproxy.New(m.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	const robot = "r-hole"
	w := watch(t, m.URL(), topics.Status(robot))
	a := agenttest.Start(t, agenttest.Options{Broker: "tcp://" + p.Addr(), RobotID: robot, Env: []string{
		"ROBOT_AGENT_MQTT_KEEP_ALIVE=1s", "ROBOT_AGENT_MQTT_CONNECT_TIMEOUT=500ms",
	}})
	first := waitStatus(t, w, "online", "")
	e1 := first.ev.Data.(protocol.RobotStatus).Epoch
	require.Positive(t, e1, "the online status carries the connection epoch")

	p.Blackhole()
	// The broker gives up on the silent connection (1.5 × keep-alive) and
	// fires its Will; meanwhile the agent's attempts pile up in the hole.
	require.Eventually(t, func() bool {
		for _, g := range w.events(t) {
			if st, ok := g.ev.Data.(protocol.RobotStatus); ok && st.State == "offline" && st.Epoch == e1 {
				return true
			}
		}
		return false
	}, wait, 20*time.Millisecond, "the first connection's Will")
	held := p.Stats().Accepted
	require.Eventually(t, func() bool { return p.Stats().Accepted >= held+3 }, wait, 20*time.Millisecond,
		"the agent keeps trying during the blackhole")
	p.Restore()

	// A late takeover can still end the connection the settle saw as live
	// (its Will then carries the live epoch, then the agent reconnects): the
	// statuses checked are taken only while they agree with the agent.
	var (
		live int64
		evs  []got
	)
	for try := 0; ; try++ {
		live = settleLive(t, a, w, e1)
		evs = w.events(t)
		if best := latestOf(evs); best.Epoch == live && best.State == "online" && lastConnectedEpoch(a) == live {
			break
		}
		require.Less(t, try, 5, "the agent's connection kept changing after the blackhole:\n%s", a.Output())
	}

	var staleWills int
	var seen []string // every status in arrival order, for a failure's message
	for _, g := range evs {
		st := g.ev.Data.(protocol.RobotStatus)
		seen = append(seen, fmt.Sprintf("%s/%d", st.State, st.Epoch))
	}
	for _, g := range evs {
		st := g.ev.Data.(protocol.RobotStatus)
		if st.State != "offline" {
			continue
		}
		require.Equal(t, "lost", st.Reason)
		require.Less(t, st.Epoch, live, "a Will (epoch %d) never outranks the live connection (epoch %d); statuses in arrival order: %v",
			st.Epoch, live, seen)
		if st.Epoch > e1 {
			staleWills++ // an attempt held by the blackhole, completed after it
		}
	}
	require.Positive(t, staleWills, "attempts held open during the blackhole completed and fired their Wills:\n%s", a.Output())
	t.Logf("first epoch %d, live epoch %d, stale Wills after the blackhole %d, proxy %+v", e1, live, staleWills, p.Stats())
}

// settleLive waits until the agent is connected, the latest status by epoch
// is its live online status and nothing changed for 2 s; it returns the live
// epoch, newer than after. (A held attempt that reaches the broker after the agent's new
// connection takes its client id over: that connection is lost too and the
// agent connects again.)
func settleLive(t *testing.T, a *agenttest.Agent, w *watcher, after int64) int64 {
	t.Helper()
	var (
		live        int64
		lastKey     string
		stableSince time.Time
	)
	require.Eventually(t, func() bool {
		live = lastConnectedEpoch(a)
		best := latestOf(w.events(t))
		if key := fmt.Sprint(live, len(w.events(t))); key != lastKey {
			lastKey, stableSince = key, time.Now()
		}
		settled := live > after && best != nil && best.Epoch == live && best.State == "online"
		return settled && time.Since(stableSince) >= 2*time.Second
	}, 2*wait, 50*time.Millisecond, "a receiver ordering by epoch ends with the live online status")
	return live
}

// latestOf is what a receiver ordering by epoch holds: the status with the
// highest epoch (the later one on a tie).
func latestOf(evs []got) *protocol.RobotStatus {
	var best *protocol.RobotStatus
	for _, g := range evs {
		st, ok := g.ev.Data.(protocol.RobotStatus)
		if ok && (best == nil || st.Epoch >= best.Epoch) {
			best = &st
		}
	}
	return best
}

// Issue 11: the real binary with two brokers in ROBOT_AGENT_MQTT_BROKER
// fails over when the one it uses stops, and comes back to the first.
func TestAgentFailsOverBetweenTwoBrokers(t *testing.T) {
	m1, m2 := brokertest.StartMosquitto(t), brokertest.StartMosquitto(t)
	const robot = "r-failover"
	w1, w2 := watch(t, m1.URL(), topics.Status(robot)), watch(t, m2.URL(), topics.Status(robot))
	a := agenttest.Start(t, agenttest.Options{Broker: m1.URL() + " , " + m2.URL(), RobotID: robot})
	on1 := waitStatus(t, w1, "online", "")
	m1.Stop()
	on2 := waitStatus(t, w2, "online", "")
	require.Greater(t, on2.ev.Data.(protocol.RobotStatus).Epoch, on1.ev.Data.(protocol.RobotStatus).Epoch)
	// The log line follows the acknowledged online status.
	require.Eventually(t, func() bool { return strings.Contains(a.Output(), "broker="+m2.URL()) }, wait, 20*time.Millisecond)

	// The agent answers commands through the second broker.
	cmd := protocol.NewEvent(robot, protocol.Command{Name: protocol.CmdPing})
	b, err := protocol.Encode(cmd)
	require.NoError(t, err)
	rw := watch(t, m2.URL(), topics.Replies(robot))
	require.True(t, rw.c.Publish(topics.Commands(robot), 1, false, b).WaitTimeout(wait))
	require.Eventually(t, func() bool {
		for _, g := range rw.events(t) {
			if r, ok := g.ev.Data.(protocol.CommandReply); ok && r.CommandID == cmd.ID && r.OK {
				return true
			}
		}
		return false
	}, wait, 20*time.Millisecond)

	m1.Start()
	m2.Stop()
	e2 := on2.ev.Data.(protocol.RobotStatus).Epoch
	require.Eventually(t, func() bool {
		st := latestOf(w1.events(t))
		return st != nil && st.State == "online" && st.Epoch > e2
	}, wait, 20*time.Millisecond, "back on the first broker with a newer epoch")
}
