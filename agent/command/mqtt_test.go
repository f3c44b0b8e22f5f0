package command_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/agent/command"
	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/agent/uplink"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

const robot = "r-1"

var topics = protocol.MustTopics("")

// agentSide wires what the daemon wires for sessions: spool (Emitter),
// uplink (paho), session manager and dispatcher, commands handed from the
// MQTT callback to a goroutine through a bounded queue.
func agentSide(t *testing.T, broker string) {
	t.Helper()
	root := t.TempDir()
	models := filepath.Join(root, "models")
	require.NoError(t, os.MkdirAll(models, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(models, "m.onnx"), []byte("model-bytes"), 0o644))
	example, err := filepath.Abs("../../scripts/examples/fake-optimizer.sh")
	require.NoError(t, err)
	one, thousand, ten := 1.0, 1000.0, 10.0
	zero := 0.0
	cfg := session.Config{
		ModelDirs:   []string{models},
		CancelGrace: 300 * time.Millisecond,
		Pipelines: []session.Pipeline{{
			Name: "fake-optimize", Runner: session.RunnerExec,
			Command: []string{example, "--model", "{model}", "--out", "{output_dir}", "--steps", "{param.steps}"},
			Params: []session.Param{
				{Name: "steps", Type: session.ParamInt, Min: &one, Max: &thousand, Default: 5},
				{Name: "step_delay", Type: session.ParamFloat, Min: &zero, Max: &ten, Default: 0.05},
			},
		}},
	}
	log := slog.New(slog.DiscardHandler)
	out, err := spool.Open(spool.Options{Path: filepath.Join(root, "spool.db"), Topics: topics, Logger: log})
	require.NoError(t, err)
	mgr, err := session.New(cfg, robot, filepath.Join(root, "state"), topics, out, log)
	require.NoError(t, err)
	d := command.New(mgr, command.Options{RobotID: robot, AgentVersion: "test"})

	cmds := make(chan []byte, 64)
	status := func(state, reason string) func(int64) []byte {
		return func(int64) []byte {
			b, err := protocol.Encode(protocol.NewEvent(robot, protocol.RobotStatus{State: state, Reason: reason, AgentVersion: "test",
				StartedAt: protocol.Now(), Pipelines: mgr.Pipelines(), Models: mgr.Models()}))
			require.NoError(t, err)
			return b
		}
	}
	up, err := uplink.New(uplink.Options{
		Brokers: []string{broker}, ClientID: robot, StatusTopic: topics.Status(robot), BackoffMin: 100 * time.Millisecond,
		Will: status("offline", "lost"), Online: status("online", ""), Offline: status("offline", "shutdown"),
		Subscriptions: []uplink.Subscription{{Topic: topics.Commands(robot), QoS: 1, Handler: func(_ string, p []byte, _ bool) {
			select {
			case cmds <- append([]byte(nil), p...):
			default:
				t.Errorf("command queue full")
			}
		}}},
		Logger: log,
	}, out)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); assert.NoError(t, mgr.Run(ctx)) }()
	go func() { defer wg.Done(); _ = up.Run(ctx) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-cmds:
				reply := d.Handle(ctx, p)
				assert.NoError(t, out.Emit(protocol.NewEvent(robot, reply)))
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = out.Close()
	})
}

// message is one publish the test client saw.
type message struct {
	topic    string
	retained bool
	ev       *protocol.Event // nil for an empty (retained-clearing) payload
}

// client is a plain MQTT client, as a field engineer's tool would be.
type client struct {
	c  mqtt.Client
	mu sync.Mutex // guards msgs
	// msgs holds everything received on the robot's tree, in arrival order.
	msgs []message
}

func newClient(t *testing.T, broker, id string) *client {
	t.Helper()
	cl := &client{}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false)
	cl.c = mqtt.NewClient(opts)
	tok := cl.c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	tok = cl.c.Subscribe(topics.RobotTree(robot), 1, func(_ mqtt.Client, m mqtt.Message) {
		msg := message{topic: m.Topic(), retained: m.Retained()}
		if m.Topic() == topics.Commands(robot) {
			return // our own commands
		}
		if len(m.Payload()) > 0 {
			ev, err := protocol.Decode(m.Payload())
			if err != nil {
				t.Errorf("undecodable payload on %s: %v", m.Topic(), err)
				return
			}
			msg.ev = ev
		}
		cl.mu.Lock()
		cl.msgs = append(cl.msgs, msg)
		cl.mu.Unlock()
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { cl.c.Disconnect(100) })
	return cl
}

// send publishes a command payload at QoS 1.
func (cl *client) send(t *testing.T, payload []byte) {
	t.Helper()
	tok := cl.c.Publish(topics.Commands(robot), 1, false, payload)
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
}

func cmd(t *testing.T, id, name string, args map[string]any) []byte {
	t.Helper()
	data := map[string]any{"name": name}
	if args != nil {
		data["args"] = args
	}
	b, err := json.Marshal(map[string]any{"v": 1, "type": "command", "id": id, "ts": protocol.Now(), "robot": robot, "seq": 0, "data": data})
	require.NoError(t, err)
	return b
}

// replies returns the command.reply data received for command id.
func (cl *client) replies(id string) []protocol.CommandReply {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []protocol.CommandReply
	for _, m := range cl.msgs {
		if m.ev != nil && m.ev.Type == protocol.TypeCommandReply {
			if r := m.ev.Data.(protocol.CommandReply); r.CommandID == id {
				out = append(out, r)
			}
		}
	}
	return out
}

func (cl *client) reply(t *testing.T, id string) protocol.CommandReply {
	t.Helper()
	var r []protocol.CommandReply
	require.Eventually(t, func() bool { r = cl.replies(id); return len(r) > 0 }, 10*time.Second, 10*time.Millisecond, "no reply to %s", id)
	return r[0]
}

// sessionEvents returns the live (non-retained) events of session s on its events topic.
func (cl *client) sessionEvents(s string) []*protocol.Event {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*protocol.Event
	for _, m := range cl.msgs {
		if m.topic == topics.SessionEvents(robot, s) && m.ev != nil {
			out = append(out, m.ev)
		}
	}
	return out
}

func (cl *client) waitFinal(t *testing.T, s string) *protocol.Event {
	t.Helper()
	var fin *protocol.Event
	require.Eventually(t, func() bool {
		for _, ev := range cl.sessionEvents(s) {
			switch ev.Type {
			case protocol.TypeSessionCompleted, protocol.TypeSessionFailed, protocol.TypeSessionCancelled:
				fin = ev
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "session %s did not finish", s)
	return fin
}

func TestCommandsThroughMosquitto(t *testing.T) {
	b := brokertest.StartMosquitto(t)
	agentSide(t, b.URL())
	cl := newClient(t, b.URL(), "tester")
	// The agent is subscribed once its online status is out.
	require.Eventually(t, func() bool {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return slices.ContainsFunc(cl.msgs, func(m message) bool {
			return m.topic == topics.Status(robot) && m.ev != nil && m.ev.Data.(protocol.RobotStatus).State == "online"
		})
	}, 10*time.Second, 10*time.Millisecond, "the agent did not come online")

	t.Run("session runs to completion", func(t *testing.T) {
		cl.send(t, cmd(t, "c-start", "start_session", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 6}}))
		r := cl.reply(t, "c-start")
		require.True(t, r.OK, "%+v", r.Error)
		var res protocol.StartSessionResult
		remarshal(t, r.Result, &res)
		fin := cl.waitFinal(t, res.SessionID)
		require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)

		var types []string
		var last int64
		for _, ev := range cl.sessionEvents(res.SessionID) {
			if len(types) == 0 || types[len(types)-1] != ev.Type {
				types = append(types, ev.Type)
			}
			assert.Greater(t, ev.Seq, last, "seq must increase")
			last = ev.Seq
		}
		assert.Equal(t, []string{protocol.TypeSessionQueued, protocol.TypeSessionStarted, protocol.TypeSessionProgress, protocol.TypeSessionCompleted}, types)
		c := fin.Data.(protocol.SessionCompleted)
		sum := sha256.Sum256([]byte("model-bytes"))
		assert.Equal(t, []protocol.Artifact{{Path: "m.optimized.onnx", Bytes: 11, SHA256: hex.EncodeToString(sum[:])}}, c.Result.Artifacts)

		// A late subscriber finds the retained final state (once it has been
		// published: it follows session.completed).
		require.Eventually(t, func() bool {
			cl.mu.Lock()
			defer cl.mu.Unlock()
			return slices.ContainsFunc(cl.msgs, func(m message) bool {
				if m.topic != topics.SessionState(robot, res.SessionID) || m.ev == nil {
					return false
				}
				st, ok := m.ev.Data.(protocol.SessionState)
				return ok && st.Status == protocol.StatusCompleted
			})
		}, 5*time.Second, 10*time.Millisecond, "the final session.state was not published")
		late := newClient(t, b.URL(), "late")
		require.Eventually(t, func() bool {
			late.mu.Lock()
			defer late.mu.Unlock()
			for _, m := range late.msgs {
				if m.topic == topics.SessionState(robot, res.SessionID) && m.retained && m.ev != nil {
					return m.ev.Data.(protocol.SessionState).Status == protocol.StatusCompleted
				}
			}
			return false
		}, 5*time.Second, 10*time.Millisecond)
	})

	t.Run("duplicate command id starts one session", func(t *testing.T) {
		p := cmd(t, "c-dup", "start_session", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 1}})
		cl.send(t, p)
		cl.send(t, p)
		require.Eventually(t, func() bool { return len(cl.replies("c-dup")) == 2 }, 10*time.Second, 10*time.Millisecond)
		rs := cl.replies("c-dup")
		assert.Equal(t, rs[0], rs[1])
		var res protocol.StartSessionResult
		remarshal(t, rs[0].Result, &res)
		cl.waitFinal(t, res.SessionID)
		queued := 0
		for _, ev := range cl.sessionEvents(res.SessionID) {
			if ev.Type == protocol.TypeSessionQueued {
				queued++
			}
		}
		assert.Equal(t, 1, queued)
	})

	t.Run("cancel mid-run", func(t *testing.T) {
		cl.send(t, cmd(t, "c-long", "start_session", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "session_id": "s-long",
			"params": map[string]any{"steps": 100, "step_delay": 0.2}}))
		require.Eventually(t, func() bool {
			return slices.ContainsFunc(cl.sessionEvents("s-long"), func(ev *protocol.Event) bool { return ev.Type == protocol.TypeSessionProgress })
		}, 10*time.Second, 10*time.Millisecond)
		cl.send(t, cmd(t, "c-cancel", "cancel_session", map[string]any{"session_id": "s-long", "reason": "test"}))
		r := cl.reply(t, "c-cancel")
		require.True(t, r.OK, "%+v", r.Error)
		fin := cl.waitFinal(t, "s-long")
		require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
		assert.Equal(t, "test", fin.Data.(protocol.SessionCancelled).Reason)
	})

	t.Run("bad commands get their error code", func(t *testing.T) {
		for _, tc := range []struct {
			id      string
			payload []byte
			code    string
		}{
			{"c-unknown", cmd(t, "c-unknown", "self_destruct", nil), protocol.CodeUnknownCommand},
			{"c-pipe", cmd(t, "c-pipe", "start_session", map[string]any{"pipeline": "nope", "model": "m.onnx"}), protocol.CodeUnknownPipeline},
			{"c-model", cmd(t, "c-model", "start_session", map[string]any{"pipeline": "fake-optimize", "model": "../../etc/passwd"}), protocol.CodeInvalidModel},
			{"c-param", cmd(t, "c-param", "start_session", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 0}}), protocol.CodeInvalidParams},
			{"c-sess", cmd(t, "c-sess", "cancel_session", map[string]any{"session_id": "nope"}), protocol.CodeUnknownSession},
			{"", []byte("{not json"), protocol.CodeInvalidCommand},
		} {
			cl.send(t, tc.payload)
			r := cl.reply(t, tc.id)
			require.False(t, r.OK)
			assert.Equal(t, tc.code, r.Error.Code, "%s: %s", tc.id, r.Error.Message)
		}
	})

	t.Run("ping", func(t *testing.T) {
		cl.send(t, cmd(t, "c-ping", "ping", nil))
		r := cl.reply(t, "c-ping")
		require.True(t, r.OK)
		var p protocol.PingResult
		remarshal(t, r.Result, &p)
		assert.True(t, p.Pong)
		assert.Equal(t, "test", p.AgentVersion)
	})
}

// remarshal converts a decoded any (map) into a typed struct.
func remarshal(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, out))
}
