package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// memEmitter is an in-memory Emitter that checks every event against the
// contract (protocol.Encode) and keeps them in order.
type memEmitter struct {
	t       testing.TB
	mu      sync.Mutex // guards the fields below
	seq     int64
	events  []*protocol.Event
	cleared []string
	notify  chan struct{} // capacity 1, signalled on every Emit
}

func newEmitter(t testing.TB) *memEmitter { return &memEmitter{t: t, notify: make(chan struct{}, 1)} }

func (e *memEmitter) Emit(ev *protocol.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	ev.Seq = e.seq
	if _, err := protocol.Encode(ev); err != nil {
		e.t.Errorf("emitted an invalid event: %v", err)
	}
	e.events = append(e.events, ev)
	select {
	case e.notify <- struct{}{}:
	default:
	}
	return nil
}

func (e *memEmitter) ClearRetained(topic string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleared = append(e.cleared, topic)
	return nil
}

// of returns the events of session id, in emission order.
func (e *memEmitter) of(id string) []*protocol.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*protocol.Event
	for _, ev := range e.events {
		if ev.Session == id {
			out = append(out, ev)
		}
	}
	return out
}

// types returns the event types of session id without session.state and,
// when collapse is set, with runs of session.progress collapsed into one.
func (e *memEmitter) types(id string, collapse bool) []string {
	var out []string
	for _, ev := range e.of(id) {
		if ev.Type == protocol.TypeSessionState {
			continue
		}
		if collapse && ev.Type == protocol.TypeSessionProgress && len(out) > 0 && out[len(out)-1] == ev.Type {
			continue
		}
		out = append(out, ev.Type)
	}
	return out
}

// final returns the terminal event of session id, or nil.
func (e *memEmitter) final(id string) *protocol.Event {
	for _, ev := range e.of(id) {
		switch ev.Type {
		case protocol.TypeSessionCompleted, protocol.TypeSessionFailed, protocol.TypeSessionCancelled:
			return ev
		}
	}
	return nil
}

// waitFinal waits for the terminal event of session id.
func (e *memEmitter) waitFinal(t testing.TB, id string, within time.Duration) *protocol.Event {
	t.Helper()
	var ev *protocol.Event
	require.Eventually(t, func() bool { ev = e.final(id); return ev != nil }, within, 10*time.Millisecond,
		"session %s did not finish; events: %v", id, e.types(id, true))
	return ev
}

// waitType waits until session id has emitted an event of typ.
func (e *memEmitter) waitType(t testing.TB, id, typ string, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return slices.Contains(e.types(id, false), typ) }, within, 10*time.Millisecond,
		"session %s emitted no %s; events: %v", id, typ, e.types(id, true))
}

// env is one manager under test with its directories.
type env struct {
	t        testing.TB
	stateDir string
	modelDir string
	em       *memEmitter
	m        *Manager
	cancel   context.CancelFunc
	done     chan error
}

func testdata(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	require.NoError(t, err)
	return p
}

func floatp(f float64) *float64 { return &f }

// testConfig has exec pipelines running the testdata scripts, short grace
// and timeouts.
func testConfig(t testing.TB, modelDir string) Config {
	return Config{
		ModelDirs:   []string{modelDir},
		CancelGrace: 300 * time.Millisecond,
		Pipelines: []Pipeline{
			{Name: "progress", Runner: RunnerExec, Command: []string{testdata(t, "progress.sh"), "{output_dir}", "{param.steps}"},
				Params: []Param{{Name: "steps", Type: ParamInt, Min: floatp(1), Max: floatp(1000), Default: 50}}},
			{Name: "spawner", Runner: RunnerExec, Command: []string{testdata(t, "spawner.sh"), "{param.pidfile}"},
				Env:    map[string]string{},
				Params: []Param{{Name: "pidfile", Type: ParamString, Required: true}, {Name: "ignore_term", Type: ParamBool, Default: false}}},
			{Name: "fail", Runner: RunnerExec, Command: []string{testdata(t, "fail.sh")}},
			{Name: "slow", Runner: RunnerExec, Command: []string{"sleep", "{param.seconds}"}, Timeout: 500 * time.Millisecond,
				Params: []Param{{Name: "seconds", Type: ParamFloat, Min: floatp(0), Max: floatp(60), Default: 30.0}}},
			{Name: "example", Runner: RunnerExec, Command: []string{examplePath(t), "--model", "{model}", "--out", "{output_dir}", "--steps", "{param.steps}"},
				Params: []Param{
					{Name: "steps", Type: ParamInt, Min: floatp(1), Max: floatp(1000), Default: 5},
					{Name: "step_delay", Type: ParamFloat, Min: floatp(0), Max: floatp(10), Default: 0.05},
					{Name: "fail", Type: ParamBool, Default: false},
				}},
			DefaultPipelines()[0], DefaultPipelines()[1],
		},
	}
}

func examplePath(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("../../scripts/examples/fake-optimizer.sh")
	require.NoError(t, err)
	return p
}

// newEnv makes a state dir with a model dir holding model.onnx and starts a
// manager; tweak may change the config first.
func newEnv(t testing.TB, tweak func(*Config)) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{t: t, stateDir: filepath.Join(root, "state"), modelDir: filepath.Join(root, "models")}
	require.NoError(t, os.MkdirAll(e.modelDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "model.onnx"), []byte("not really onnx"), 0o644))
	cfg := testConfig(t, e.modelDir)
	if tweak != nil {
		tweak(&cfg)
	}
	e.em = newEmitter(t)
	e.start(cfg)
	return e
}

// start runs a manager on the env's state dir.
func (e *env) start(cfg Config) {
	e.t.Helper()
	m, err := New(cfg, "r-1", e.stateDir, protocol.MustTopics(""), e.em, nil)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	e.m, e.cancel, e.done = m, cancel, make(chan error, 1)
	go func() { e.done <- m.Run(ctx) }()
	e.t.Cleanup(func() { e.stop() })
}

// stop ends Run and waits for it.
func (e *env) stop() {
	e.t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		require.NoError(e.t, err)
	case <-time.After(20 * time.Second):
		e.t.Fatal("Run did not return after its context was cancelled")
	}
	e.cancel = nil
}

func (e *env) startSession(req StartRequest) string {
	e.t.Helper()
	if req.Model == "" {
		req.Model = "model.onnx"
	}
	res, err := e.m.Start(req)
	require.NoError(e.t, err)
	require.Equal(e.t, protocol.StatusQueued, res.Status)
	return res.SessionID
}

// readPids waits for the pid file a spawner.sh writes.
func readPids(t testing.TB, path string) []int {
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
	}, 10*time.Second, 10*time.Millisecond, "spawner.sh wrote no pid file")
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
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

// requireGone waits until none of pids is alive.
func requireGone(t testing.TB, pids []int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, p := range pids {
			if alive(p) {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "processes %v still alive", pids)
}

// waitFinalState waits for the session.state that follows a session's final
// event (it is emitted just after it) and returns it.
func (e *memEmitter) waitFinalState(t testing.TB, id string, within time.Duration) protocol.SessionState {
	t.Helper()
	var st protocol.SessionState
	deadline := time.Now().Add(within)
	for {
		if evs := e.of(id); len(evs) > 0 {
			if s, ok := evs[len(evs)-1].Data.(protocol.SessionState); ok && s.Finished() {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s: no final session.state within %s", id, within)
			return st
		}
		time.Sleep(5 * time.Millisecond)
	}
}
