package command

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/protocol"
)

// memEmitter keeps the manager's events.
type memEmitter struct {
	mu     sync.Mutex // guards events
	events []*protocol.Event
}

func (e *memEmitter) Emit(ev *protocol.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, ev)
	return nil
}

func (e *memEmitter) ClearRetained(string) error { return nil }

func (e *memEmitter) count(session, typ string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev.Session == session && ev.Type == typ {
			n++
		}
	}
	return n
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// newDispatcher runs a manager with a "sleep" exec pipeline and a model dir
// holding m.onnx; the clock stands at t0.
func newDispatcher(t *testing.T, tweak func(*session.Config)) (*Dispatcher, *memEmitter, *session.Manager) {
	t.Helper()
	root := t.TempDir()
	models := filepath.Join(root, "models")
	require.NoError(t, os.MkdirAll(models, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(models, "m.onnx"), []byte("m"), 0o644))
	zero, sixty := 0.0, 60.0
	cfg := session.Config{
		ModelDirs:   []string{models},
		CancelGrace: 200 * time.Millisecond,
		Pipelines: []session.Pipeline{{
			Name: "sleep", Runner: session.RunnerExec, Command: []string{"sleep", "{param.seconds}"},
			Params: []session.Param{{Name: "seconds", Type: session.ParamFloat, Min: &zero, Max: &sixty, Default: 30.0}},
		}},
	}
	if tweak != nil {
		tweak(&cfg)
	}
	em := &memEmitter{}
	mgr, err := session.New(cfg, "r-1", filepath.Join(root, "state"), protocol.MustTopics(""), em, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	d := New(mgr, Options{RobotID: "r-1", AgentVersion: "1.2.3", StartedAt: t0.Add(-time.Minute), Now: func() time.Time { return t0 }})
	return d, em, mgr
}

// cmdPayload is a command as any MQTT client would publish it.
func cmdPayload(t testing.TB, id, name string, args map[string]any, extra map[string]any) []byte {
	t.Helper()
	data := map[string]any{"name": name}
	if args != nil {
		data["args"] = args
	}
	for k, v := range extra {
		data[k] = v
	}
	b, err := json.Marshal(map[string]any{
		"v": 1, "type": "command", "id": id, "ts": "2026-11-25T12:00:00.000Z", "robot": "r-1", "seq": 0, "data": data,
	})
	require.NoError(t, err)
	return b
}

// checkReply fails unless reply makes a valid command.reply event.
func checkReply(t testing.TB, reply protocol.CommandReply) {
	t.Helper()
	_, err := protocol.Encode(protocol.NewEvent("r-1", reply))
	require.NoError(t, err, "reply %+v breaks the contract", reply)
}

func TestErrorCodes(t *testing.T) {
	d, em, _ := newDispatcher(t, func(c *session.Config) { c.MaxQueued = 1 })
	ctx := context.Background()

	// A running session, one queued behind it (the queue is then full), and a finished one.
	running := d.Handle(ctx, cmdPayload(t, "c-run", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-run"}, nil))
	require.True(t, running.OK, "%+v", running.Error)
	require.Eventually(t, func() bool { return em.count("s-run", protocol.TypeSessionStarted) == 1 }, 5*time.Second, 10*time.Millisecond)
	fin := d.Handle(ctx, cmdPayload(t, "c-fin", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-fin", "params": map[string]any{"seconds": 0}}, nil))
	require.True(t, fin.OK, "%+v", fin.Error)
	cancelRun := d.Handle(ctx, cmdPayload(t, "c-cancel-run", "cancel_session", map[string]any{"session_id": "s-run"}, nil))
	require.True(t, cancelRun.OK, "%+v", cancelRun.Error)
	require.Eventually(t, func() bool { return em.count("s-fin", protocol.TypeSessionCompleted) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.True(t, d.Handle(ctx, cmdPayload(t, "c-run2", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-run2"}, nil)).OK)
	require.Eventually(t, func() bool { return em.count("s-run2", protocol.TypeSessionStarted) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.True(t, d.Handle(ctx, cmdPayload(t, "c-q", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx"}, nil)).OK)

	start := func(args map[string]any) []byte { return cmdPayload(t, protocol.NewID(), "start_session", args, nil) }
	for _, tc := range []struct {
		name    string
		payload []byte
		code    string
		msg     string
		noID    bool
	}{
		{"not JSON", []byte("hello"), protocol.CodeInvalidCommand, "not a JSON object", true},
		{"JSON array", []byte("[1]"), protocol.CodeInvalidCommand, "not a JSON object", true},
		{"missing name", []byte(`{"v":1,"type":"command","id":"c-x","ts":"2026-11-25T12:00:00Z","robot":"r-1","seq":0,"data":{}}`), protocol.CodeInvalidCommand, "data.name", false},
		{"not a command", []byte(`{"v":1,"type":"robot.notification","id":"c-y","ts":"2026-11-25T12:00:00Z","robot":"r-1","seq":1,"data":{"level":"info","title":"t"}}`), protocol.CodeInvalidCommand, "not a command", false},
		{"other robot", []byte(`{"v":1,"type":"command","id":"c-z","ts":"2026-11-25T12:00:00Z","robot":"r-2","seq":0,"data":{"name":"ping"}}`), protocol.CodeInvalidCommand, "another robot", false},
		{"unknown command", cmdPayload(t, "c-u", "reboot", nil, nil), protocol.CodeUnknownCommand, `"reboot"`, false},
		{"expired", cmdPayload(t, "c-e", "ping", nil, map[string]any{"expires_at": "2026-11-25T11:59:59.000Z"}), protocol.CodeExpired, "expired at 2026-11-25T11:59:59.000Z", false},
		{"unknown pipeline", start(map[string]any{"pipeline": "nope", "model": "m.onnx"}), protocol.CodeUnknownPipeline, `"nope"`, false},
		{"missing pipeline", start(map[string]any{"model": "m.onnx"}), protocol.CodeInvalidCommand, "args.pipeline is required", false},
		{"pipeline not a string", start(map[string]any{"pipeline": 5, "model": "m.onnx"}), protocol.CodeInvalidCommand, "args.pipeline must be a string", false},
		{"missing model", start(map[string]any{"pipeline": "sleep"}), protocol.CodeInvalidCommand, "args.model is required", false},
		{"model traversal", start(map[string]any{"pipeline": "sleep", "model": "../state/sessions.db"}), protocol.CodeInvalidModel, `".."`, false},
		{"model absolute", start(map[string]any{"pipeline": "sleep", "model": "/etc/passwd"}), protocol.CodeInvalidModel, "absolute", false},
		{"model missing", start(map[string]any{"pipeline": "sleep", "model": "x.onnx"}), protocol.CodeInvalidModel, "not in any model directory", false},
		{"param out of range", start(map[string]any{"pipeline": "sleep", "model": "m.onnx", "params": map[string]any{"seconds": 61}}), protocol.CodeInvalidParams, `param "seconds": must be in [0, 60], got 61`, false},
		{"param wrong type", start(map[string]any{"pipeline": "sleep", "model": "m.onnx", "params": map[string]any{"seconds": "1"}}), protocol.CodeInvalidParams, `param "seconds": must be a number`, false},
		{"param unknown", start(map[string]any{"pipeline": "sleep", "model": "m.onnx", "params": map[string]any{"speed": 1}}), protocol.CodeInvalidParams, `param "speed" is not declared`, false},
		{"bad session id", start(map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "a b"}), protocol.CodeInvalidCommand, "session_id", false},
		{"queue full", start(map[string]any{"pipeline": "sleep", "model": "m.onnx"}), protocol.CodeBusy, "sessions.max_queued", false},
		{"cancel unknown", cmdPayload(t, "c-cu", "cancel_session", map[string]any{"session_id": "nope"}, nil), protocol.CodeUnknownSession, `"nope"`, false},
		{"cancel finished", cmdPayload(t, "c-cf", "cancel_session", map[string]any{"session_id": "s-fin"}, nil), protocol.CodeSessionFinished, "completed", false},
		{"cancel without id", cmdPayload(t, "c-cn", "cancel_session", map[string]any{}, nil), protocol.CodeInvalidCommand, "args.session_id is required", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := d.Handle(ctx, tc.payload)
			checkReply(t, reply)
			require.False(t, reply.OK)
			assert.Equal(t, tc.code, reply.Error.Code, reply.Error.Message)
			assert.Contains(t, reply.Error.Message, tc.msg)
			if tc.noID {
				assert.Empty(t, reply.CommandID)
			} else {
				var env struct{ ID string }
				require.NoError(t, json.Unmarshal(tc.payload, &env))
				assert.Equal(t, env.ID, reply.CommandID)
			}
		})
	}
}

func TestPingAndList(t *testing.T) {
	d, _, _ := newDispatcher(t, nil)
	ctx := context.Background()
	reply := d.Handle(ctx, cmdPayload(t, "c-p", "ping", nil, map[string]any{"reply_to": map[string]any{"ref": "abc"}}))
	checkReply(t, reply)
	require.True(t, reply.OK)
	assert.Equal(t, protocol.PingResult{Pong: true, AgentVersion: "1.2.3", UptimeS: 60}, reply.Result)
	assert.Equal(t, map[string]any{"ref": "abc"}, reply.ReplyTo)
	assert.Equal(t, "c-p", reply.CommandID)

	require.True(t, d.Handle(ctx, cmdPayload(t, "c-s", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-1"}, nil)).OK)
	reply = d.Handle(ctx, cmdPayload(t, "c-l", "list_sessions", nil, nil))
	checkReply(t, reply)
	require.True(t, reply.OK)
	list := reply.Result.(listSessions)
	require.Len(t, list.Sessions, 1)
	assert.Equal(t, "s-1", list.Sessions[0].SessionID)
	assert.Equal(t, "sleep", list.Sessions[0].Pipeline)
	assert.Equal(t, map[string]any{"seconds": 30.0}, list.Sessions[0].Params)

	reply = d.Handle(ctx, cmdPayload(t, "c-c", "cancel_session", map[string]any{"session_id": "s-1", "reason": "test", "by": "carol"}, nil))
	checkReply(t, reply)
	require.True(t, reply.OK, "%+v", reply.Error)
	assert.Contains(t, []string{"cancelled", "cancelling"}, reply.Result.(protocol.CancelSessionResult).Status)
}

func TestDuplicateStartStartsOneSession(t *testing.T) {
	d, em, mgr := newDispatcher(t, nil)
	ctx := context.Background()
	payload := cmdPayload(t, "c-dup", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx"}, nil)

	// QoS 1 redeliveries may arrive while the first is still handled.
	replies := make([]protocol.CommandReply, 8)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = d.Handle(ctx, payload)
		}()
	}
	wg.Wait()
	for _, r := range replies {
		require.True(t, r.OK, "%+v", r.Error)
		assert.Equal(t, replies[0], r)
	}
	require.Len(t, mgr.List(), 1)
	id := replies[0].Result.(protocol.StartSessionResult).SessionID
	require.Eventually(t, func() bool { return em.count(id, protocol.TypeSessionStarted) == 1 }, 5*time.Second, 10*time.Millisecond)

	// A fresh dispatcher (an agent restart: empty cache) still answers
	// from the session journal.
	d2 := New(mgr, Options{RobotID: "r-1"})
	again := d2.Handle(ctx, payload)
	assert.Equal(t, replies[0], again)
	assert.Equal(t, 1, em.count(id, protocol.TypeSessionQueued))
}

func TestReplyCacheIsBounded(t *testing.T) {
	d, _, _ := newDispatcher(t, nil)
	for i := range cacheEntries + 10 {
		d.Handle(context.Background(), cmdPayload(t, "p-"+strings.Repeat("x", 3)+string(rune('a'+i%26))+protocol.NewID()[20:], "ping", nil, nil))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	assert.LessOrEqual(t, len(d.cache), cacheEntries)
	assert.Len(t, d.order, len(d.cache))
	assert.LessOrEqual(t, d.bytes, cacheBytes)
}

func TestListResultFitsPayload(t *testing.T) {
	big := make([]protocol.SessionSummary, 400)
	for i := range big {
		big[i] = protocol.SessionSummary{SessionID: "s", SessionState: protocol.SessionState{Status: "queued", Pipeline: "p", Model: "m",
			Message: strings.Repeat("m", 1000), CreatedAt: protocol.Now()}}
	}
	res := listResult(big)
	assert.Positive(t, res.Omitted)
	assert.Equal(t, 400, res.Omitted+len(res.Sessions))
	checkReply(t, ok(res))
}
