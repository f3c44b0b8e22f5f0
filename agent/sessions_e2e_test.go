package agent_test

// End-to-end tests of optimization sessions: the real robot-agent binary,
// a real Mosquitto broker, real runner processes, and a test that talks to
// the agent the way any MQTT client would (publishing commands, reading the
// robot's topics). Identifiers here start with "ses" to stay clear of the
// package's other tests.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/agent/internal/agenttest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

const (
	sesRobot = "r-ses"
	sesWait  = 20 * time.Second
)

var sesTopics = protocol.MustTopics("")

// sesEnv is one agent under test with its broker, directories and client.
type sesEnv struct {
	t        *testing.T
	broker   *brokertest.Mosquitto
	stateDir string
	modelDir string
	config   string
	agent    *agenttest.Agent
	cl       *sesClient
}

// sesConfig is the agent's config: exec pipelines over the example and test
// scripts, and the built-in quantizer.
func sesConfig(t *testing.T, modelDir string) string {
	t.Helper()
	root := agenttest.ModuleRoot(t)
	example := filepath.Join(root, "scripts/examples/fake-optimizer.sh")
	testdata := filepath.Join(root, "agent/session/testdata")
	return fmt.Sprintf(`
alerts:
  rules: []
sessions:
  max_concurrent: 1
  cancel_grace: 500ms
  model_dirs: [%q]
  pipelines:
    - name: fake-optimize
      runner: exec
      command: [%q, "--model", "{model}", "--out", "{output_dir}", "--steps", "{param.steps}"]
      params:
        - {name: steps, type: int, min: 1, max: 1000, default: 5}
        - {name: step_delay, type: float, min: 0, max: 10, default: 0.05}
        - {name: fail, type: bool, default: false}
    - name: spawner
      runner: exec
      command: [%q, "{param.pidfile}"]
      params:
        - {name: pidfile, type: string, required: true}
    - name: fail
      runner: exec
      command: [%q]
    - name: slow
      runner: exec
      command: ["sleep", "30"]
      timeout: 1s
    - name: quantize-int8
      runner: onnx-quantize
      params:
        - {name: mode, type: enum, choices: [int8, fp16], default: int8}
        - {name: per_channel, type: bool, default: true}
        - {name: min_elements, type: int, min: 1, default: 1024}
`, modelDir, example, filepath.Join(testdata, "spawner.sh"), filepath.Join(testdata, "fail.sh"))
}

func sesSetup(t *testing.T) *sesEnv {
	t.Helper()
	root := t.TempDir()
	e := &sesEnv{t: t, broker: brokertest.StartMosquitto(t), stateDir: filepath.Join(root, "state"), modelDir: filepath.Join(root, "models")}
	require.NoError(t, os.MkdirAll(e.modelDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "m.onnx"), []byte("model-bytes"), 0o644))
	e.config = sesConfig(t, e.modelDir)
	e.cl = sesConnect(t, e.broker.URL(), "ses-tester")
	e.start()
	return e
}

// start runs the agent and waits until it is online (and so subscribed).
func (e *sesEnv) start() {
	e.t.Helper()
	n := e.cl.count(func(m sesMsg) bool { return m.isStatus("online") })
	e.agent = agenttest.Start(e.t, agenttest.Options{Broker: e.broker.URL(), RobotID: sesRobot, StateDir: e.stateDir, Config: e.config,
		Env: []string{"ROBOT_AGENT_METRICS_INTERVAL=1h"}})
	require.Eventually(e.t, func() bool { return e.cl.count(func(m sesMsg) bool { return m.isStatus("online") }) > n },
		sesWait, 10*time.Millisecond, "the agent did not come online")
}

// sesMsg is one publish the client saw.
type sesMsg struct {
	topic    string
	retained bool
	ev       *protocol.Event // nil for an empty payload
}

func (m sesMsg) isStatus(state string) bool {
	return m.topic == sesTopics.Status(sesRobot) && m.ev != nil && m.ev.Data.(protocol.RobotStatus).State == state
}

// sesClient is a plain MQTT client on the robot's topic tree.
type sesClient struct {
	t    *testing.T
	c    mqtt.Client
	mu   sync.Mutex // guards msgs
	msgs []sesMsg
}

func sesConnect(t *testing.T, broker, id string) *sesClient {
	t.Helper()
	cl := &sesClient{t: t}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(true).SetOrderMatters(true)
	cl.c = mqtt.NewClient(opts)
	tok := cl.c.Connect()
	require.True(t, tok.WaitTimeout(sesWait))
	require.NoError(t, tok.Error())
	tok = cl.c.Subscribe(sesTopics.RobotTree(sesRobot), 1, func(_ mqtt.Client, m mqtt.Message) {
		if m.Topic() == sesTopics.Commands(sesRobot) {
			return
		}
		msg := sesMsg{topic: m.Topic(), retained: m.Retained()}
		if len(m.Payload()) > 0 {
			ev, err := protocol.Decode(m.Payload())
			if err != nil {
				t.Errorf("agent published an invalid payload on %s: %v", m.Topic(), err)
				return
			}
			msg.ev = ev
		}
		cl.mu.Lock()
		cl.msgs = append(cl.msgs, msg)
		cl.mu.Unlock()
	})
	require.True(t, tok.WaitTimeout(sesWait))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { cl.c.Disconnect(100) })
	return cl
}

func (cl *sesClient) count(match func(sesMsg) bool) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	n := 0
	for _, m := range cl.msgs {
		if match(m) {
			n++
		}
	}
	return n
}

// publish sends a raw command payload at QoS 1.
func (cl *sesClient) publish(payload []byte) {
	cl.t.Helper()
	tok := cl.c.Publish(sesTopics.Commands(sesRobot), 1, false, payload)
	require.True(cl.t, tok.WaitTimeout(sesWait))
	require.NoError(cl.t, tok.Error())
}

// command builds a command envelope as a dashboard or fleetctl would.
func sesCommand(t *testing.T, id, name string, args map[string]any) []byte {
	t.Helper()
	data := map[string]any{"name": name}
	if args != nil {
		data["args"] = args
	}
	b, err := json.Marshal(map[string]any{"v": 1, "type": "command", "id": id, "ts": protocol.Now(), "robot": sesRobot, "seq": 0, "data": data})
	require.NoError(t, err)
	return b
}

// replies returns the command.reply data for command id, in arrival order.
func (cl *sesClient) replies(id string) []protocol.CommandReply {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []protocol.CommandReply
	for _, m := range cl.msgs {
		if m.ev != nil && m.ev.Type == protocol.TypeCommandReply && m.ev.Data.(protocol.CommandReply).CommandID == id {
			out = append(out, m.ev.Data.(protocol.CommandReply))
		}
	}
	return out
}

// call publishes a command and returns its (first) reply.
func (cl *sesClient) call(id, name string, args map[string]any) protocol.CommandReply {
	cl.t.Helper()
	cl.publish(sesCommand(cl.t, id, name, args))
	return cl.reply(id)
}

func (cl *sesClient) reply(id string) protocol.CommandReply {
	cl.t.Helper()
	var rs []protocol.CommandReply
	require.Eventually(cl.t, func() bool { rs = cl.replies(id); return len(rs) > 0 }, sesWait, 10*time.Millisecond, "no reply to %s", id)
	return rs[0]
}

// start starts a session and returns its id.
func (cl *sesClient) start(id string, args map[string]any) string {
	cl.t.Helper()
	r := cl.call(id, protocol.CmdStartSession, args)
	require.True(cl.t, r.OK, "start_session %v: %+v", args, r.Error)
	var res protocol.StartSessionResult
	sesRemarshal(cl.t, r.Result, &res)
	require.Equal(cl.t, protocol.StatusQueued, res.Status)
	return res.SessionID
}

// events returns session s's events from its events topic, in order.
func (cl *sesClient) events(s string) []*protocol.Event {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*protocol.Event
	for _, m := range cl.msgs {
		if m.topic == sesTopics.SessionEvents(sesRobot, s) && m.ev != nil {
			out = append(out, m.ev)
		}
	}
	return out
}

// types returns the event types of session s, runs of progress collapsed.
func (cl *sesClient) types(s string) []string {
	var out []string
	for _, ev := range cl.events(s) {
		if len(out) == 0 || out[len(out)-1] != ev.Type || ev.Type != protocol.TypeSessionProgress {
			out = append(out, ev.Type)
		}
	}
	return out
}

func (cl *sesClient) waitType(s, typ string) *protocol.Event {
	cl.t.Helper()
	var found *protocol.Event
	require.Eventually(cl.t, func() bool {
		for _, ev := range cl.events(s) {
			if ev.Type == typ {
				found = ev
				return true
			}
		}
		return false
	}, sesWait, 10*time.Millisecond, "session %s: no %s; got %v", s, typ, cl.types(s))
	return found
}

func (cl *sesClient) final(s string) *protocol.Event {
	cl.t.Helper()
	var fin *protocol.Event
	require.Eventually(cl.t, func() bool {
		for _, ev := range cl.events(s) {
			switch ev.Type {
			case protocol.TypeSessionCompleted, protocol.TypeSessionFailed, protocol.TypeSessionCancelled:
				fin = ev
				return true
			}
		}
		return false
	}, sesWait, 10*time.Millisecond, "session %s did not finish; got %v", s, cl.types(s))
	return fin
}

// lastState returns the latest session.state of s (zero when none yet).
func (cl *sesClient) lastState(s string) protocol.SessionState {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for i := len(cl.msgs) - 1; i >= 0; i-- {
		if m := cl.msgs[i]; m.topic == sesTopics.SessionState(sesRobot, s) && m.ev != nil {
			return m.ev.Data.(protocol.SessionState)
		}
	}
	return protocol.SessionState{}
}

// waitState waits until the latest session.state of s has status and
// returns it.
func (cl *sesClient) waitState(s, status string) protocol.SessionState {
	cl.t.Helper()
	var st protocol.SessionState
	require.Eventually(cl.t, func() bool { st = cl.lastState(s); return st.Status == status }, sesWait, 10*time.Millisecond,
		"session %s: state never became %s (last %q)", s, status, cl.lastState(s).Status)
	return st
}

func sesRemarshal(t *testing.T, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, out))
}

// sesPids waits for the pid file spawner.sh writes: two grandchildren and
// the child.
func sesPids(t *testing.T, path string) []int {
	t.Helper()
	var pids []int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(f)
			require.NoError(t, err)
			pids = append(pids, n)
		}
		return len(pids) == 3
	}, sesWait, 10*time.Millisecond, "spawner.sh wrote no pid file")
	return pids
}

// sesAlive reports whether pid exists and is not a zombie.
func sesAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}

func sesRequireGone(t *testing.T, pids []int) {
	t.Helper()
	require.Eventually(t, func() bool { return !slices.ContainsFunc(pids, sesAlive) }, sesWait, 10*time.Millisecond, "processes %v still alive", pids)
}

func TestSessionsEndToEnd(t *testing.T) {
	e := sesSetup(t)
	cl := e.cl
	outside := filepath.Join(t.TempDir(), "secret.onnx")
	require.NoError(t, os.WriteFile(outside, []byte("secret"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(e.modelDir, "escape.onnx")))
	require.NoError(t, os.Symlink(filepath.Dir(outside), filepath.Join(e.modelDir, "escdir")))

	t.Run("robot.status lists pipelines and models", func(t *testing.T) {
		var st protocol.RobotStatus
		cl.mu.Lock()
		for _, m := range cl.msgs {
			if m.isStatus("online") {
				st = m.ev.Data.(protocol.RobotStatus)
			}
		}
		cl.mu.Unlock()
		assert.Equal(t, []string{"fake-optimize", "spawner", "fail", "slow", "quantize-int8"}, st.Pipelines)
		assert.Contains(t, st.Models, "m.onnx")
	})

	t.Run("session completes in order with artifacts", func(t *testing.T) {
		id := cl.start("c-complete", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 8}})
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
		assert.Equal(t, []string{protocol.TypeSessionQueued, protocol.TypeSessionStarted, protocol.TypeSessionProgress, protocol.TypeSessionCompleted}, cl.types(id))
		var last int64
		var progress []protocol.SessionProgress
		for _, ev := range cl.events(id) {
			assert.Greater(t, ev.Seq, last, "seq must increase")
			last = ev.Seq
			if p, ok := ev.Data.(protocol.SessionProgress); ok {
				progress = append(progress, p)
			}
		}
		assert.Equal(t, 100.0, progress[len(progress)-1].Percent, "the final percent is sent")
		sum := sha256.Sum256([]byte("model-bytes"))
		res := fin.Data.(protocol.SessionCompleted).Result
		assert.Equal(t, []protocol.Artifact{{Path: "m.optimized.onnx", Bytes: 11, SHA256: hex.EncodeToString(sum[:])}}, res.Artifacts)
		assert.Equal(t, map[string]float64{"size_before": 11, "size_after": 11, "passes": 8}, res.Metrics)
		st := cl.waitState(id, protocol.StatusCompleted)
		assert.Equal(t, 100.0, st.Percent)
		b, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "output", "m.optimized.onnx"))
		require.NoError(t, err)
		assert.Equal(t, "model-bytes", string(b))
	})

	t.Run("two sessions queue with max_concurrent 1", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pids")
		first := cl.start("c-q1", map[string]any{"pipeline": "spawner", "model": "m.onnx", "params": map[string]any{"pidfile": pidfile}})
		sesPids(t, pidfile)
		second := cl.start("c-q2", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 1}})
		q := cl.waitType(second, protocol.TypeSessionQueued).Data.(protocol.SessionQueued)
		assert.Equal(t, 0, q.Position)
		cl.waitState(second, protocol.StatusQueued)
		assert.NotContains(t, cl.types(second), protocol.TypeSessionStarted)

		require.True(t, cl.call("c-q1-cancel", protocol.CmdCancelSession, map[string]any{"session_id": first, "reason": "make room"}).OK)
		require.Equal(t, protocol.TypeSessionCompleted, cl.final(second).Type)
		cancelled := cl.final(first)
		started := cl.waitType(second, protocol.TypeSessionStarted)
		assert.Less(t, cancelled.Seq, started.Seq, "the second started before the first ended")
	})

	t.Run("cancel mid-run leaves no process", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pids")
		id := cl.start("c-cancel-run", map[string]any{"pipeline": "spawner", "model": "m.onnx", "params": map[string]any{"pidfile": pidfile}})
		pids := sesPids(t, pidfile)
		cl.waitType(id, protocol.TypeSessionProgress)
		r := cl.call("c-cancel", protocol.CmdCancelSession, map[string]any{"session_id": id, "reason": "operator asked"})
		require.True(t, r.OK, "%+v", r.Error)
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
		assert.Equal(t, "operator asked", fin.Data.(protocol.SessionCancelled).Reason)
		sesRequireGone(t, pids)
		cl.waitState(id, protocol.StatusCancelled)

		again := cl.call("c-cancel-again", protocol.CmdCancelSession, map[string]any{"session_id": id})
		require.False(t, again.OK)
		assert.Equal(t, protocol.CodeSessionFinished, again.Error.Code)
	})

	t.Run("timeout", func(t *testing.T) {
		id := cl.start("c-timeout", map[string]any{"pipeline": "slow", "model": "m.onnx"})
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		assert.Equal(t, protocol.FailTimeout, fin.Data.(protocol.SessionFailed).Error.Code)
	})

	t.Run("runner exits non-zero", func(t *testing.T) {
		id := cl.start("c-fail", map[string]any{"pipeline": "fail", "model": "m.onnx"})
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		f := fin.Data.(protocol.SessionFailed)
		assert.Equal(t, protocol.FailRunnerError, f.Error.Code)
		require.NotNil(t, f.ExitCode)
		assert.Equal(t, 3, *f.ExitCode)
		assert.True(t, strings.HasSuffix(f.Error.Detail, "last words\n"))
		assert.LessOrEqual(t, len(f.Error.Detail), 4096)
		assert.NotContains(t, f.Error.Detail, "stderr line 00000")
		st := cl.waitState(id, protocol.StatusFailed)
		require.NotNil(t, st.Error)
		assert.Equal(t, protocol.FailRunnerError, st.Error.Code)
	})

	t.Run("built-in quantizer", func(t *testing.T) {
		gen := exec.Command("go", "run", "./onnxq/internal/testmodels/genmodels", "-big=false", e.modelDir)
		out, err := gen.CombinedOutput()
		require.NoError(t, err, "%s", out)
		entries, err := filepath.Glob(filepath.Join(e.modelDir, "*.onnx"))
		require.NoError(t, err)
		var model string
		for _, p := range entries {
			if b := filepath.Base(p); b != "m.onnx" && b != "escape.onnx" {
				model = b
				break
			}
		}
		require.NotEmpty(t, model, "genmodels wrote no model")
		id := cl.start("c-quant", map[string]any{"pipeline": "quantize-int8", "model": model})
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
		res := fin.Data.(protocol.SessionCompleted).Result
		require.Len(t, res.Artifacts, 1)
		assert.True(t, strings.HasSuffix(res.Artifacts[0].Path, ".int8.onnx"))
		assert.Greater(t, res.Metrics["compression_ratio"], 1.0)

		bad := cl.start("c-quant-bad", map[string]any{"pipeline": "quantize-int8", "model": "m.onnx"})
		fin = cl.final(bad)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		assert.Equal(t, protocol.FailInvalidModel, fin.Data.(protocol.SessionFailed).Error.Code)
	})

	t.Run("duplicate command id starts one session", func(t *testing.T) {
		p := sesCommand(t, "c-dup", protocol.CmdStartSession, map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 1}})
		cl.publish(p)
		cl.publish(p)
		require.Eventually(t, func() bool { return len(cl.replies("c-dup")) == 2 }, sesWait, 10*time.Millisecond)
		rs := cl.replies("c-dup")
		require.True(t, rs[0].OK)
		assert.Equal(t, rs[0], rs[1])
		var res protocol.StartSessionResult
		sesRemarshal(t, rs[0].Result, &res)
		cl.final(res.SessionID)
		n := 0
		for _, ev := range cl.events(res.SessionID) {
			if ev.Type == protocol.TypeSessionQueued {
				n++
			}
		}
		assert.Equal(t, 1, n)
	})

	t.Run("invalid commands get their error code", func(t *testing.T) {
		start := func(args map[string]any) map[string]any { return args }
		for _, tc := range []struct {
			name, id string
			payload  []byte
			code     string
			msg      string
		}{
			{"undecodable", "", []byte("{\"v\":1,"), protocol.CodeInvalidCommand, "JSON"},
			{"unknown command", "c-e1", sesCommand(t, "c-e1", "format_disk", nil), protocol.CodeUnknownCommand, "format_disk"},
			{"unknown pipeline", "c-e2", sesCommand(t, "c-e2", "start_session", start(map[string]any{"pipeline": "nope", "model": "m.onnx"})), protocol.CodeUnknownPipeline, "nope"},
			{"path traversal", "c-e3", sesCommand(t, "c-e3", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "../state/sessions.db"})), protocol.CodeInvalidModel, ".."},
			{"absolute path", "c-e4", sesCommand(t, "c-e4", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "/etc/passwd"})), protocol.CodeInvalidModel, "absolute"},
			{"symlink escape", "c-e5", sesCommand(t, "c-e5", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "escape.onnx"})), protocol.CodeInvalidModel, "outside"},
			{"symlinked dir escape", "c-e6", sesCommand(t, "c-e6", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "escdir/secret.onnx"})), protocol.CodeInvalidModel, "outside"},
			{"param out of range", "c-e7", sesCommand(t, "c-e7", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 5000}})), protocol.CodeInvalidParams, `"steps": must be in [1, 1000], got 5000`},
			{"param wrong type", "c-e8", sesCommand(t, "c-e8", "start_session", start(map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"fail": "yes"}})), protocol.CodeInvalidParams, `"fail": must be true or false`},
			{"unknown session", "c-e9", sesCommand(t, "c-e9", "cancel_session", map[string]any{"session_id": "nope"}), protocol.CodeUnknownSession, "nope"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cl.publish(tc.payload)
				r := cl.reply(tc.id)
				require.False(t, r.OK)
				assert.Equal(t, tc.code, r.Error.Code, r.Error.Message)
				assert.Contains(t, r.Error.Message, tc.msg)
			})
		}

		expired, err := json.Marshal(map[string]any{"v": 1, "type": "command", "id": "c-exp", "ts": protocol.Now(), "robot": sesRobot, "seq": 0,
			"data": map[string]any{"name": "ping", "expires_at": protocol.T(time.Now().Add(-time.Minute))}})
		require.NoError(t, err)
		cl.publish(expired)
		r := cl.reply("c-exp")
		require.False(t, r.OK)
		assert.Equal(t, protocol.CodeExpired, r.Error.Code)
	})

	t.Run("list_sessions", func(t *testing.T) {
		r := cl.call("c-list", protocol.CmdListSessions, nil)
		require.True(t, r.OK)
		var res protocol.ListSessionsResult
		sesRemarshal(t, r.Result, &res)
		assert.GreaterOrEqual(t, len(res.Sessions), 8)
		for _, s := range res.Sessions {
			assert.NotEmpty(t, s.SessionID)
			assert.True(t, s.Finished(), "%s is %s", s.SessionID, s.Status)
		}
	})

	t.Run("SIGTERM cancels the running session, the queued one runs after restart", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pids")
		running := cl.start("c-term-run", map[string]any{"pipeline": "spawner", "model": "m.onnx", "params": map[string]any{"pidfile": pidfile}})
		pids := sesPids(t, pidfile)
		queued := cl.start("c-term-queued", map[string]any{"pipeline": "fake-optimize", "model": "m.onnx", "params": map[string]any{"steps": 1}})
		cl.waitType(queued, protocol.TypeSessionQueued)

		require.Equal(t, 0, e.agent.Stop(), "clean stop")
		fin := cl.final(running)
		require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
		c := fin.Data.(protocol.SessionCancelled)
		assert.Equal(t, "agent", c.By)
		assert.Equal(t, "agent shutting down", c.Reason)
		sesRequireGone(t, pids)

		// The queued session's state says it waits for the restart. That
		// state may reach the broker before the agent disconnects or,
		// from the durable spool, right after it reconnects.
		e.start()
		require.Equal(t, protocol.TypeSessionCompleted, cl.final(queued).Type)
		started := cl.waitType(queued, protocol.TypeSessionStarted)
		cl.mu.Lock()
		waiting := slices.ContainsFunc(cl.msgs, func(m sesMsg) bool {
			if m.topic != sesTopics.SessionState(sesRobot, queued) || m.ev == nil || m.ev.Seq > started.Seq {
				return false
			}
			st := m.ev.Data.(protocol.SessionState)
			return st.Status == protocol.StatusQueued && st.Message == "waiting for the agent to restart"
		})
		cl.mu.Unlock()
		assert.True(t, waiting, "no queued session.state saying it waits for the restart")
	})

	// Last: it restarts the agent.
	t.Run("kill -9 mid-session then restart reports agent_restarted", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pids")
		id := cl.start("c-crash", map[string]any{"pipeline": "spawner", "model": "m.onnx", "params": map[string]any{"pidfile": pidfile}})
		pids := sesPids(t, pidfile)
		cl.waitType(id, protocol.TypeSessionProgress)

		e.agent.Kill()
		require.Eventually(t, func() bool { return cl.count(func(m sesMsg) bool { return m.isStatus("offline") }) > 0 }, sesWait, 10*time.Millisecond,
			"no Last Will after kill -9")

		e.start()
		fin := cl.final(id)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		ferr := fin.Data.(protocol.SessionFailed).Error
		assert.Equal(t, protocol.FailAgentRestarted, ferr.Code)
		// What the journal last knew is reported, not 0 % and no stage.
		assert.Equal(t, `the agent stopped while the session was running (at 10%, stage "spawned")`, ferr.Message)
		assert.Equal(t, "last progress message: children running", ferr.Detail)
		sesRequireGone(t, pids)
		st := cl.waitState(id, protocol.StatusFailed)
		assert.EqualValues(t, 10, st.Percent)
		assert.Equal(t, "spawned", st.Stage)

		// The command id survived in the journal: a redelivery gets the first reply.
		before := len(cl.replies("c-crash"))
		cl.publish(sesCommand(t, "c-crash", protocol.CmdStartSession, map[string]any{"pipeline": "spawner", "model": "m.onnx", "params": map[string]any{"pidfile": pidfile}}))
		require.Eventually(t, func() bool { return len(cl.replies("c-crash")) > before }, sesWait, 10*time.Millisecond)
		rs := cl.replies("c-crash")
		assert.Equal(t, rs[0], rs[len(rs)-1])
	})
}
