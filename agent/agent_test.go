package agent_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/robotfleet/fleetlink/agent/config"
	"github.com/robotfleet/fleetlink/agent/internal/agenttest"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

var topics = protocol.Topics{}

const wait = 15 * time.Second

// watcher is an MQTT subscriber that keeps every message it receives.
type watcher struct {
	mu   sync.Mutex
	msgs []mqtt.Message
	c    mqtt.Client
}

func watch(t *testing.T, url, filter string) *watcher {
	t.Helper()
	w := &watcher{}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("w-%d", time.Now().UnixNano())).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).SetOrderMatters(true)
	o.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			w.mu.Lock()
			w.msgs = append(w.msgs, m)
			w.mu.Unlock()
		})
	})
	w.c = mqtt.NewClient(o)
	tok := w.c.Connect()
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { w.c.Disconnect(0) })
	return w
}

type got struct {
	topic    string
	retained bool
	ev       *protocol.Event
}

// events decodes what arrived, keeping the first delivery of each event id
// (QoS 1 is at least once; receivers de-duplicate by id).
func (w *watcher) events(t *testing.T) []got {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []got
	seen := map[string]bool{}
	for _, m := range w.msgs {
		if len(m.Payload()) == 0 || strings.HasSuffix(m.Topic(), "/commands") {
			continue // retained clears; what the test itself sends
		}
		ev, err := protocol.Decode(m.Payload())
		require.NoError(t, err, "topic %s payload %s", m.Topic(), m.Payload())
		if seen[ev.ID] && !m.Retained() {
			continue
		}
		seen[ev.ID] = true
		out = append(out, got{m.Topic(), m.Retained(), ev})
	}
	return out
}

// deliveries counts the raw deliveries of event id (duplicates included).
func (w *watcher) deliveries(id string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if strings.Contains(string(m.Payload()), `"id":"`+id+`"`) {
			n++
		}
	}
	return n
}

// lastStatus returns the latest robot.status seen, or nil.
func (w *watcher) lastStatus(t *testing.T) (*protocol.RobotStatus, got) {
	t.Helper()
	evs := w.events(t)
	for i := len(evs) - 1; i >= 0; i-- {
		if st, ok := evs[i].ev.Data.(protocol.RobotStatus); ok {
			return &st, evs[i]
		}
	}
	return nil, got{}
}

func waitStatus(t *testing.T, w *watcher, state, reason string) got {
	t.Helper()
	var g got
	require.Eventually(t, func() bool {
		st, last := w.lastStatus(t)
		g = last
		return st != nil && st.State == state && st.Reason == reason
	}, wait, 20*time.Millisecond, "no status %s/%s", state, reason)
	return g
}

func TestOnlineStatusThenLastWillOnKill9(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	a := agenttest.Start(t, agenttest.Options{Broker: m.URL(), RobotID: "r-kill"})
	w := watch(t, m.URL(), topics.Status("r-kill"))
	online := waitStatus(t, w, "online", "")
	st := online.ev.Data.(protocol.RobotStatus)
	require.Equal(t, []string{"quantize-int8", "quantize-fp16"}, st.Pipelines)
	require.NotNil(t, st.Models)
	require.NotEmpty(t, st.AgentVersion)
	require.Equal(t, "r-kill", online.ev.Robot)

	a.Kill()
	lost := waitStatus(t, w, "offline", "lost")
	require.Equal(t, st.StartedAt, lost.ev.Data.(protocol.RobotStatus).StartedAt)
	// Retained: a late subscriber reads offline/lost.
	late := watch(t, m.URL(), topics.Status("r-kill"))
	g := waitStatus(t, late, "offline", "lost")
	require.True(t, g.retained)
}

func TestOfflineShutdownOnSIGTERM(t *testing.T) {
	b := brokertest.StartMochi(t)
	a := agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-term"})
	w := watch(t, b.URL(), topics.Status("r-term"))
	on := waitStatus(t, w, "online", "")
	require.Zero(t, a.Stop(), "exit code after SIGTERM")
	off := waitStatus(t, w, "offline", "shutdown")
	require.Greater(t, off.ev.Seq, on.ev.Seq)
	require.Contains(t, a.Output(), "disconnected from the broker")
	late := watch(t, b.URL(), topics.Status("r-term"))
	g := waitStatus(t, late, "offline", "shutdown")
	require.True(t, g.retained)
}

func TestMetricsHaveEverySpecFieldAndValidate(t *testing.T) {
	b := brokertest.StartMochi(t)
	agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-met"})
	w := watch(t, b.URL(), "fleet/v1/robots/r-met/#")
	var ms []got
	require.Eventually(t, func() bool {
		ms = ms[:0]
		for _, g := range w.events(t) {
			if g.ev.Type == protocol.TypeRobotMetrics {
				ms = append(ms, g)
			}
		}
		return len(ms) >= 2
	}, wait, 20*time.Millisecond)
	require.Equal(t, topics.Metrics("r-met"), ms[0].topic)
	require.Greater(t, ms[1].ev.Seq, ms[0].ev.Seq)
	// Every spec field is present in the JSON (Decode validated the values).
	raw, err := json.Marshal(ms[1].ev)
	require.NoError(t, err)
	var data map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &struct {
		Data *map[string]json.RawMessage `json:"data"`
	}{&data}))
	for _, k := range []string{"cpu", "memory", "swap", "disks", "net", "temperatures", "gpus", "uptime_s", "agent"} {
		require.Contains(t, data, k)
	}
	m := ms[1].ev.Data.(protocol.RobotMetrics)
	require.NotEmpty(t, m.CPU.PerCore)
	require.NotEmpty(t, m.Disks)
	require.NotNil(t, m.GPUs)
	require.Positive(t, m.Agent.RSSBytes)
	// Retained: a late subscriber gets the latest sample at once.
	late := watch(t, b.URL(), topics.Metrics("r-met"))
	require.Eventually(t, func() bool { evs := late.events(t); return len(evs) > 0 && evs[0].retained }, wait, 20*time.Millisecond)
}

func TestBootWithoutBrokerThenConnects(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	m.Stop()
	a := agenttest.Start(t, agenttest.Options{Broker: m.URL(), RobotID: "r-boot"})
	require.Eventually(t, func() bool { return strings.Contains(a.Output(), "cannot connect to the broker") }, wait, 20*time.Millisecond)
	require.False(t, a.Exited())
	m.Start()
	w := watch(t, m.URL(), topics.Status("r-boot"))
	waitStatus(t, w, "online", "")
}

// Events spooled while the broker is down survive kill -9 and are
// delivered, once, after the restart; seq keeps increasing across it.
func TestKill9SpooledEventsDeliveredAfterRestart(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	m.Stop()
	state := t.TempDir()
	trip := "alerts:\n  rules:\n    - {name: always_on, metric: cpu_percent, op: \">=\", threshold: 0, severity: info}\n"
	a := agenttest.Start(t, agenttest.Options{Broker: m.URL(), RobotID: "r-spool", StateDir: state, Config: trip})
	require.Eventually(t, func() bool { return strings.Contains(a.Output(), "alert=always_on") }, wait, 20*time.Millisecond)
	a.Kill()

	out, err := spool.Open(spool.Options{Path: filepath.Join(state, "spool.db")})
	require.NoError(t, err)
	held, err := out.Read(0, 100)
	require.NoError(t, err)
	require.NoError(t, out.Close())
	require.Len(t, held, 1)
	spooled, err := protocol.Decode(held[0].Payload)
	require.NoError(t, err)
	require.Equal(t, protocol.TypeRobotAlert, spooled.Type)

	m.Start()
	w := watch(t, m.URL(), "fleet/v1/robots/r-spool/#")
	a2 := agenttest.Start(t, agenttest.Options{Broker: m.URL(), RobotID: "r-spool", StateDir: state, Config: "alerts: {rules: []}\n"})
	require.Eventually(t, func() bool {
		for _, g := range w.events(t) {
			if g.ev.ID == spooled.ID {
				return true
			}
		}
		return false
	}, wait, 20*time.Millisecond)
	on := waitStatus(t, w, "online", "")
	require.Greater(t, on.ev.Seq, spooled.Seq, "seq went backwards across the restart")
	require.Zero(t, a2.Stop())

	// Acknowledged, so not sent again by a third run.
	out, err = spool.Open(spool.Options{Path: filepath.Join(state, "spool.db")})
	require.NoError(t, err)
	require.Zero(t, out.Stats().Depth)
	require.NoError(t, out.Close())
	require.Equal(t, 1, w.deliveries(spooled.ID), "the spooled event was sent more than once")
}

func TestPingCommandIsAnswered(t *testing.T) {
	b := brokertest.StartMochi(t)
	agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-cmd"})
	w := watch(t, b.URL(), "fleet/v1/robots/r-cmd/#")
	waitStatus(t, w, "online", "")
	cmd := protocol.NewEvent("r-cmd", protocol.Command{Name: protocol.CmdPing})
	payload, err := protocol.Encode(cmd)
	require.NoError(t, err)
	w.c.Publish(topics.Commands("r-cmd"), 1, false, payload).Wait()
	w.c.Publish(topics.Commands("r-cmd"), 1, false, []byte("not json")).Wait()
	var replies []protocol.CommandReply
	require.Eventually(t, func() bool {
		replies = replies[:0]
		for _, g := range w.events(t) {
			if r, ok := g.ev.Data.(protocol.CommandReply); ok {
				require.Equal(t, topics.Replies("r-cmd"), g.topic)
				replies = append(replies, r)
			}
		}
		return len(replies) == 2
	}, wait, 20*time.Millisecond)
	require.True(t, replies[0].OK)
	require.Equal(t, cmd.ID, replies[0].CommandID)
	require.False(t, replies[1].OK)
	require.Equal(t, protocol.CodeInvalidCommand, replies[1].Error.Code)
}

// A config error exits non-zero with the field and the rule, before any
// connection is attempted.
func TestConfigErrorsExitBeforeTheNetwork(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	var mu sync.Mutex
	accepted := 0
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			c.Close()
		}
	}()
	addr := l.Addr().String()
	badFile := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(badFile, []byte("mqtt:\n  broker: tcp://"+addr+"\nmetrics:\n  interval: 100ms\n"), 0o600))
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"scheme", []string{"ROBOT_AGENT_MQTT_BROKER=http://" + addr}, []string{"run"}, `mqtt.broker: bad broker URL: "http://` + addr + `": unsupported scheme "http" (want tcp, mqtt, ssl, tls, mqtts, ws, wss)`},
		{"file", []string{"ROBOT_AGENT_STATE_DIR=" + t.TempDir()}, []string{"run", "--config", badFile}, "metrics.interval: must be at least 1s, got 100ms"},
		{"missing file", nil, []string{"run", "--config", "/nonexistent/agent.yaml"}, "/nonexistent/agent.yaml"},
		{"state dir", []string{"ROBOT_AGENT_MQTT_BROKER=tcp://" + addr, "ROBOT_AGENT_STATE_DIR=/dev/null/state"}, []string{"run"}, "ROBOT_AGENT_STATE_DIR"},
		{"robot id", []string{"ROBOT_AGENT_ROBOT_ID=a/b", "ROBOT_AGENT_MQTT_BROKER=tcp://" + addr}, []string{"run"}, `robot_id: "a/b" must match`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := agenttest.Run(t, tc.env, tc.args...)
			require.NotZero(t, code)
			require.Contains(t, stderr, tc.want)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, accepted, "an invalid config must not touch the network")
}

func TestCLI(t *testing.T) {
	out, _, code := agenttest.Run(t, nil, "config", "example")
	require.Zero(t, code)
	require.Equal(t, string(config.Example()), out)

	f := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(f, []byte("mqtt: {username: u, password: hunter2}\n"), 0o600))
	out, _, code = agenttest.Run(t, []string{"ROBOT_AGENT_ROBOT_ID=r-9"}, "config", "check", "--config", f)
	require.Zero(t, code)
	require.Contains(t, out, "robot_id: r-9")
	require.Contains(t, out, "password: '***'")
	require.NotContains(t, out, "hunter2")

	out, _, code = agenttest.Run(t, nil, "install", "--print-unit", "--config", "/etc/ra.yaml")
	require.Zero(t, code)
	require.Contains(t, out, "ExecStart="+agenttest.Binary(t)+" run --config /etc/ra.yaml")
	require.Contains(t, out, "RestartSec=5")

	out, _, code = agenttest.Run(t, nil, "--version")
	require.Zero(t, code)
	require.True(t, strings.HasPrefix(out, "robot-agent "))
	out, _, code = agenttest.Run(t, nil, "--help")
	require.Zero(t, code)
	require.Contains(t, out, "robot-agent run [--config FILE]")
	_, _, code = agenttest.Run(t, nil, "frobnicate")
	require.NotZero(t, code)
}

// Drops while the spool was full (here: before a restart) are reported
// once, as a robot.notification warning, when the agent is connected.
func TestSpoolDropsAreReportedOnceConnected(t *testing.T) {
	b := brokertest.StartMochi(t)
	state := t.TempDir()
	out, err := spool.Open(spool.Options{Path: filepath.Join(state, "spool.db"), MaxBytes: 2000})
	require.NoError(t, err)
	for i := range 20 {
		ev := protocol.NewEvent("r-drop", protocol.RobotNotification{Level: "info", Title: fmt.Sprintf("queued %d", i)})
		require.NoError(t, out.Emit(ev))
	}
	st := out.Stats()
	require.Positive(t, st.TotalDropped())
	require.NoError(t, out.Close())

	w := watch(t, b.URL(), "fleet/v1/robots/r-drop/#")
	a := agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-drop", StateDir: state})
	var warn *protocol.RobotNotification
	require.Eventually(t, func() bool {
		queued := 0
		for _, g := range w.events(t) {
			if n, ok := g.ev.Data.(protocol.RobotNotification); ok {
				if n.Level == "warning" {
					warn = &n
				} else {
					queued++
				}
			}
		}
		return warn != nil && int64(queued) == st.Depth
	}, wait, 20*time.Millisecond)
	require.Equal(t, "Spool full: events dropped", warn.Title)
	require.Contains(t, warn.Message, fmt.Sprintf("%d events dropped", st.TotalDropped()))
	require.Zero(t, a.Stop())

	// Reported once: a restart does not repeat it.
	w2 := watch(t, b.URL(), "fleet/v1/robots/r-drop/#")
	a2 := agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-drop", StateDir: state})
	waitStatus(t, w2, "online", "")
	require.Zero(t, a2.Stop())
	for _, g := range w2.events(t) {
		if n, ok := g.ev.Data.(protocol.RobotNotification); ok {
			require.NotEqual(t, "warning", n.Level)
		}
	}
}

// A start_session command runs a configured exec pipeline: the reply and
// every session event go out through the spool, in seq order, and the
// session's state is retained.
func TestStartSessionEventsFlowThroughTheSpool(t *testing.T) {
	b := brokertest.StartMochi(t)
	state := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(state, "models"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(state, "models", "m.onnx"), []byte("not really onnx"), 0o644))
	cfg := `sessions:
  pipelines:
    - name: echo
      runner: exec
      command: ["/bin/sh", "-c", "echo hello > {output_dir}/out.txt"]
`
	agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-sess", StateDir: state, Config: cfg})
	w := watch(t, b.URL(), "fleet/v1/robots/r-sess/#")
	on := waitStatus(t, w, "online", "")
	require.Equal(t, []string{"echo"}, on.ev.Data.(protocol.RobotStatus).Pipelines)
	require.Equal(t, []string{"m.onnx"}, on.ev.Data.(protocol.RobotStatus).Models)

	cmd := protocol.NewEvent("r-sess", protocol.Command{Name: protocol.CmdStartSession, Args: map[string]any{"pipeline": "echo", "model": "m.onnx", "session_id": "s-1"}})
	payload, err := protocol.Encode(cmd)
	require.NoError(t, err)
	w.c.Publish(topics.Commands("r-sess"), 1, false, payload).Wait()

	var types []string
	require.Eventually(t, func() bool {
		types = types[:0]
		var last int64
		finalState := false
		for _, g := range w.events(t) {
			if g.ev.Type == protocol.TypeRobotMetrics || g.ev.Type == protocol.TypeRobotStatus {
				continue
			}
			require.Greater(t, g.ev.Seq, last, "spooled events out of seq order")
			last = g.ev.Seq
			types = append(types, g.ev.Type)
			if st, ok := g.ev.Data.(protocol.SessionState); ok && (st.Status == protocol.StatusCompleted || st.Status == protocol.StatusFailed) {
				finalState = true
			}
		}
		// Wait for the final session.state too (it follows the final event):
		// published after the late subscriber below subscribed, it would
		// reach it live, without the retained flag.
		return (slices.Contains(types, protocol.TypeSessionCompleted) || slices.Contains(types, protocol.TypeSessionFailed)) &&
			finalState
	}, wait, 20*time.Millisecond, "events so far: %v", types)
	require.Contains(t, types, protocol.TypeCommandReply)
	require.Contains(t, types, protocol.TypeSessionStarted)
	require.Contains(t, types, protocol.TypeSessionCompleted, "events: %v", types)

	late := watch(t, b.URL(), topics.SessionState("r-sess", "s-1"))
	require.Eventually(t, func() bool {
		evs := late.events(t)
		return len(evs) > 0 && evs[len(evs)-1].retained && evs[len(evs)-1].ev.Data.(protocol.SessionState).Status == protocol.StatusCompleted
	}, wait, 20*time.Millisecond)
}

// A model copied into a model directory is announced by a new retained
// robot.status, without a reconnect.
func TestNewModelRepublishesStatus(t *testing.T) {
	b := brokertest.StartMochi(t)
	state := t.TempDir()
	agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-models", StateDir: state,
		Env: []string{"ROBOT_AGENT_METRICS_STATUS_REFRESH=1s"}})
	w := watch(t, b.URL(), topics.Status("r-models"))
	on := waitStatus(t, w, "online", "")
	require.Empty(t, on.ev.Data.(protocol.RobotStatus).Models)
	require.NoError(t, os.MkdirAll(filepath.Join(state, "models", "yolo"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(state, "models", "yolo", "v8n.onnx"), []byte("x"), 0o644))
	require.Eventually(t, func() bool {
		st, _ := w.lastStatus(t)
		return st != nil && st.State == "online" && slices.Contains(st.Models, "yolo/v8n.onnx")
	}, wait, 50*time.Millisecond)
}

// A command sent the instant the robot's online status arrives is answered:
// the agent subscribes to its commands before it announces itself.
func TestCommandSentOnOnlineIsAnswered(t *testing.T) {
	b := brokertest.StartMochi(t)
	w := watch(t, b.URL(), "fleet/v1/robots/r-fast/replies")
	cmd := protocol.NewEvent("r-fast", protocol.Command{Name: protocol.CmdPing})
	payload, err := protocol.Encode(cmd)
	require.NoError(t, err)
	var once sync.Once
	tok := w.c.Subscribe(topics.Status("r-fast"), 1, func(c mqtt.Client, m mqtt.Message) {
		if ev, err := protocol.Decode(m.Payload()); err == nil && ev.Data.(protocol.RobotStatus).State == "online" {
			once.Do(func() { c.Publish(topics.Commands("r-fast"), 1, false, payload) }) // no Wait: inside a callback
		}
	})
	require.True(t, tok.WaitTimeout(wait))
	agenttest.Start(t, agenttest.Options{Broker: b.URL(), RobotID: "r-fast"})
	require.Eventually(t, func() bool {
		for _, g := range w.events(t) {
			if r, ok := g.ev.Data.(protocol.CommandReply); ok && r.CommandID == cmd.ID {
				return r.OK
			}
		}
		return false
	}, wait, 20*time.Millisecond, "no reply to a command sent when the robot came online")
}
