package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/internal/agenttest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

// cmdEnv is a real agent on Mosquitto with a pipeline "mark" that creates
// a marker file: the marker exists iff a session ran.
type cmdEnv struct {
	t      *testing.T
	broker *brokertest.Mosquitto
	robot  string
	state  string
	marker string
	cfg    string
	agent  *agenttest.Agent
	w      *watcher
}

func newCmdEnv(t *testing.T, robot string) *cmdEnv {
	e := &cmdEnv{t: t, broker: brokertest.StartMosquitto(t), robot: robot, state: t.TempDir()}
	e.marker = filepath.Join(t.TempDir(), "ran")
	require.NoError(t, os.MkdirAll(filepath.Join(e.state, "models"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.state, "models", "m.onnx"), []byte("m"), 0o644))
	e.cfg = fmt.Sprintf("sessions:\n  pipelines:\n    - name: mark\n      runner: exec\n      command: [\"/bin/sh\", \"-c\", \"touch %s\"]\n", e.marker)
	e.w = watch(t, e.broker.URL(), "fleet/v1/robots/"+robot+"/#")
	return e
}

func (e *cmdEnv) start() {
	e.agent = agenttest.Start(e.t, agenttest.Options{Broker: e.broker.URL(), RobotID: e.robot, StateDir: e.state, Config: e.cfg})
	require.Eventually(e.t, func() bool { return lastConnectedEpoch(e.agent) > 0 }, wait, 20*time.Millisecond, "the agent did not connect")
}

func (e *cmdEnv) command(name string, args map[string]any, ts time.Time) *protocol.Event {
	ev := protocol.NewEvent(e.robot, protocol.Command{Name: name, Args: args})
	ev.TS = protocol.T(ts)
	return ev
}

func (e *cmdEnv) publish(ev *protocol.Event, retained bool) {
	b, err := protocol.Encode(ev)
	require.NoError(e.t, err)
	tok := e.w.c.Publish(topics.Commands(e.robot), 1, retained, b)
	require.True(e.t, tok.WaitTimeout(wait))
	require.NoError(e.t, tok.Error())
}

// replies returns the command.reply events for id, in arrival order.
func (e *cmdEnv) replies(id string) []protocol.CommandReply {
	var out []protocol.CommandReply
	for _, g := range e.w.events(e.t) {
		if r, ok := g.ev.Data.(protocol.CommandReply); ok && r.CommandID == id {
			out = append(out, r)
		}
	}
	return out
}

// ping sends a ping and waits for its reply: every command received before
// it has been handled (one queue, one goroutine).
func (e *cmdEnv) ping() {
	p := e.command(protocol.CmdPing, nil, time.Now())
	e.publish(p, false)
	require.Eventually(e.t, func() bool { return len(e.replies(p.ID)) == 1 }, wait, 20*time.Millisecond, "ping not answered")
}

func (e *cmdEnv) requireNothingRan(ids ...string) {
	_, err := os.Stat(e.marker)
	require.True(e.t, os.IsNotExist(err), "a session ran")
	for _, g := range e.w.events(e.t) {
		require.NotEqual(e.t, protocol.TypeSessionQueued, g.ev.Type, "a session was queued")
	}
	for _, id := range ids {
		require.Empty(e.t, e.replies(id), "command %s was handled", id)
	}
}

// Issue 9 item 14: a retained start_session on the robot's commands topic
// (what a stolen credential or a mistaken mosquitto_pub -r leaves behind)
// runs nothing: not when the agent connects, not after a restart.
func TestRetainedCommandRunsNothing(t *testing.T) {
	e := newCmdEnv(t, "r-retained")
	evil := e.command(protocol.CmdStartSession, map[string]any{"pipeline": "mark", "model": "m.onnx"}, time.Now())
	e.publish(evil, true)
	e.start()
	e.ping()
	e.requireNothingRan(evil.ID)
	require.Contains(t, e.agent.Output(), "ignored a retained message on the commands topic")

	require.Zero(t, e.agent.Stop())
	e.start()
	e.ping()
	e.requireNothingRan(evil.ID)

	// The same command sent live runs: the pipeline works.
	live := e.command(protocol.CmdStartSession, map[string]any{"pipeline": "mark", "model": "m.onnx"}, time.Now())
	e.publish(live, false)
	require.Eventually(t, func() bool { _, err := os.Stat(e.marker); return err == nil }, wait, 20*time.Millisecond)
}

// A payload far over the protocol's 256 KiB on the commands topic is
// dropped by the command queue's byte cap (counted, logged); the agent
// goes on answering.
func TestOversizedCommandIsDropped(t *testing.T) {
	e := newCmdEnv(t, "r-big")
	e.start()
	tok := e.w.c.Publish(topics.Commands(e.robot), 1, false, make([]byte, 2<<20))
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	e.ping()
	require.Eventually(t, func() bool { return strings.Contains(e.agent.Output(), "command queue full: command dropped") }, wait, 20*time.Millisecond)
}

// Issue 9 item 14: a captured command replayed later is refused by its ts
// (code expired, the message names the clocks), and a command id is never
// executed twice, also across a restart, even when the first run was
// refused and would now succeed.
func TestReplayedCommandsAreRefused(t *testing.T) {
	e := newCmdEnv(t, "r-replay")
	e.start()

	old := e.command(protocol.CmdStartSession, map[string]any{"pipeline": "mark", "model": "m.onnx"}, time.Now().Add(-time.Hour))
	e.publish(old, false)
	require.Eventually(t, func() bool { return len(e.replies(old.ID)) == 1 }, wait, 20*time.Millisecond)
	r := e.replies(old.ID)[0]
	require.False(t, r.OK)
	require.Equal(t, protocol.CodeExpired, r.Error.Code)
	require.Contains(t, r.Error.Message, "old")
	require.Contains(t, r.Error.Message, "clock")
	future := e.command(protocol.CmdPing, nil, time.Now().Add(time.Hour))
	e.publish(future, false)
	require.Eventually(t, func() bool { return len(e.replies(future.ID)) == 1 }, wait, 20*time.Millisecond)
	require.Equal(t, protocol.CodeExpired, e.replies(future.ID)[0].Error.Code)
	require.Contains(t, e.replies(future.ID)[0].Error.Message, "in the future")
	e.requireNothingRan()

	// Refused first (no such model), the model appears, the agent restarts,
	// the same command comes again: it gets its first reply, nothing runs.
	cmd := e.command(protocol.CmdStartSession, map[string]any{"pipeline": "mark", "model": "late.onnx"}, time.Now())
	e.publish(cmd, false)
	require.Eventually(t, func() bool { return len(e.replies(cmd.ID)) == 1 }, wait, 20*time.Millisecond)
	first := e.replies(cmd.ID)[0]
	require.Equal(t, protocol.CodeInvalidModel, first.Error.Code)
	require.NoError(t, os.WriteFile(filepath.Join(e.state, "models", "late.onnx"), []byte("m"), 0o644))
	require.Zero(t, e.agent.Stop())
	e.start()
	e.publish(cmd, false)
	require.Eventually(t, func() bool { return len(e.replies(cmd.ID)) == 2 }, wait, 20*time.Millisecond)
	require.Equal(t, first, e.replies(cmd.ID)[1], "a replayed command gets its first reply")
	e.ping()
	e.requireNothingRan()
}
