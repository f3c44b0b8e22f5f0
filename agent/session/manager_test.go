package session

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

func TestSessionCompletes(t *testing.T) {
	e := newEnv(t, nil)
	id := e.startSession(StartRequest{Pipeline: "progress", Params: map[string]any{"steps": 200.0}})
	fin := e.em.waitFinal(t, id, 10*time.Second)
	require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)

	assert.Equal(t, []string{
		protocol.TypeSessionQueued, protocol.TypeSessionStarted, protocol.TypeSessionProgress, protocol.TypeSessionCompleted,
	}, e.em.types(id, true))

	// Artifacts with size and sha256 of the real files.
	res := fin.Data.(protocol.SessionCompleted).Result
	require.Len(t, res.Artifacts, 2)
	byPath := map[string]protocol.Artifact{}
	for _, a := range res.Artifacts {
		byPath[a.Path] = a
	}
	sum := sha256.Sum256([]byte("artifact-bytes"))
	assert.Equal(t, protocol.Artifact{Path: "model.bin", Bytes: 14, SHA256: hex.EncodeToString(sum[:])}, byPath["model.bin"])
	assert.Equal(t, int64(1), byPath["sub/extra.txt"].Bytes)
	assert.Equal(t, map[string]float64{"size_before": 100, "size_after": 14}, res.Metrics)

	// Progress: throttled to 4 per second, the last percent (100) sent.
	var progress []*protocol.Event
	for _, ev := range e.em.of(id) {
		if ev.Type == protocol.TypeSessionProgress {
			progress = append(progress, ev)
		}
	}
	require.NotEmpty(t, progress)
	assert.Less(t, len(progress), 200, "progress was not throttled")
	assert.Equal(t, 100.0, progress[len(progress)-1].Data.(protocol.SessionProgress).Percent)
	for i := 1; i < len(progress); i++ {
		gap := progress[i].TS.Sub(progress[i-1].TS.Time)
		assert.GreaterOrEqual(t, gap, progressInterval-5*time.Millisecond, "progress %d came %s after the previous", i, gap)
	}

	// Every change has its session.state; the last says completed.
	st := e.em.waitFinalState(t, id, 5*time.Second)
	assert.Equal(t, protocol.StatusCompleted, st.Status)
	assert.Equal(t, 100.0, st.Percent)
	assert.NotNil(t, st.Result)
	assert.NotNil(t, st.FinishedAt)

	// Stdout noise and stderr went to the session log.
	log, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "session.log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), "starting, not JSON")
	assert.Contains(t, string(log), "to stderr")
	assert.NotContains(t, string(log), `"progress"`)

	// The list shows it.
	list := e.m.List()
	require.Len(t, list, 1)
	assert.Equal(t, id, list[0].SessionID)
	assert.Equal(t, protocol.StatusCompleted, list[0].Status)
}

func TestQueueRunsOneAtATime(t *testing.T) {
	e := newEnv(t, nil)
	pidfile := filepath.Join(t.TempDir(), "pids")
	first := e.startSession(StartRequest{Pipeline: "spawner", Params: map[string]any{"pidfile": pidfile}})
	readPids(t, pidfile)
	second := e.startSession(StartRequest{Pipeline: "progress", Params: map[string]any{"steps": 3.0}})
	third := e.startSession(StartRequest{Pipeline: "progress", Params: map[string]any{"steps": 3.0}})
	assert.Equal(t, 0, e.em.of(second)[0].Data.(protocol.SessionQueued).Position)
	assert.Equal(t, 1, e.em.of(third)[0].Data.(protocol.SessionQueued).Position)
	assert.NotContains(t, e.em.types(second, false), protocol.TypeSessionStarted, "second started while the first runs")

	_, err := e.m.Cancel(first, "make room", "test")
	require.NoError(t, err)
	require.Equal(t, protocol.TypeSessionCompleted, e.em.waitFinal(t, second, 10*time.Second).Type)
	require.Equal(t, protocol.TypeSessionCompleted, e.em.waitFinal(t, third, 10*time.Second).Type)

	// The second started only after the first had finished.
	e.em.mu.Lock()
	var order []string
	for _, ev := range e.em.events {
		if (ev.Session == first && ev.Type == protocol.TypeSessionCancelled) || (ev.Session == second && ev.Type == protocol.TypeSessionStarted) {
			order = append(order, ev.Session+" "+ev.Type)
		}
	}
	e.em.mu.Unlock()
	assert.Equal(t, []string{first + " session.cancelled", second + " session.started"}, order)
}

func TestCancelKillsProcessGroup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
	}{{"sigterm", false}, {"sigkill after grace", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			pidfile := filepath.Join(t.TempDir(), "pids")
			id := e.startSession(StartRequest{Pipeline: "spawner", Params: map[string]any{"pidfile": pidfile, "ignore_term": tc.ignoreTerm}})
			pids := readPids(t, pidfile)
			e.em.waitType(t, id, protocol.TypeSessionProgress, 5*time.Second)

			res, err := e.m.Cancel(id, "operator asked", "alice")
			require.NoError(t, err)
			assert.Contains(t, []string{protocol.StatusCancelled, statusCancelling}, res.Status)
			fin := e.em.waitFinal(t, id, 10*time.Second)
			require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
			c := fin.Data.(protocol.SessionCancelled)
			assert.Equal(t, "operator asked", c.Reason)
			assert.Equal(t, "alice", c.By)
			requireGone(t, pids) // child and both grandchildren

			_, err = e.m.Cancel(id, "", "alice")
			require.ErrorIs(t, err, ErrSessionFinished)
		})
	}
}

func TestCancelQueued(t *testing.T) {
	e := newEnv(t, nil)
	pidfile := filepath.Join(t.TempDir(), "pids")
	first := e.startSession(StartRequest{Pipeline: "spawner", Params: map[string]any{"pidfile": pidfile}})
	second := e.startSession(StartRequest{Pipeline: "progress"})
	res, err := e.m.Cancel(second, "changed my mind", "bob")
	require.NoError(t, err)
	assert.Equal(t, protocol.StatusCancelled, res.Status)
	assert.Equal(t, []string{protocol.TypeSessionQueued, protocol.TypeSessionCancelled}, e.em.types(second, false))
	_, err = e.m.Cancel("nope", "", "bob")
	require.ErrorIs(t, err, ErrUnknownSession)
	_, err = e.m.Cancel(first, "", "bob")
	require.NoError(t, err)
	e.em.waitFinal(t, first, 10*time.Second)
}

func TestTimeout(t *testing.T) {
	e := newEnv(t, nil)
	id := e.startSession(StartRequest{Pipeline: "slow"})
	fin := e.em.waitFinal(t, id, 10*time.Second)
	require.Equal(t, protocol.TypeSessionFailed, fin.Type)
	f := fin.Data.(protocol.SessionFailed)
	assert.Equal(t, protocol.FailTimeout, f.Error.Code)
	assert.Contains(t, f.Error.Message, "500ms")
}

func TestRunnerFailure(t *testing.T) {
	e := newEnv(t, nil)
	id := e.startSession(StartRequest{Pipeline: "fail"})
	fin := e.em.waitFinal(t, id, 10*time.Second)
	require.Equal(t, protocol.TypeSessionFailed, fin.Type)
	f := fin.Data.(protocol.SessionFailed)
	assert.Equal(t, protocol.FailRunnerError, f.Error.Code)
	require.NotNil(t, f.ExitCode)
	assert.Equal(t, 3, *f.ExitCode)
	assert.LessOrEqual(t, len(f.Error.Detail), stderrTail)
	assert.Greater(t, len(f.Error.Detail), stderrTail-64)
	assert.True(t, strings.HasSuffix(f.Error.Detail, "last words\n"), "detail ends %q", f.Error.Detail[len(f.Error.Detail)-40:])
	assert.NotContains(t, f.Error.Detail, "stderr line 00000", "the tail holds the end, not the start")

	st := e.em.waitFinalState(t, id, 5*time.Second)
	assert.Equal(t, protocol.StatusFailed, st.Status)
	require.NotNil(t, st.Error)
	assert.Equal(t, protocol.FailRunnerError, st.Error.Code)
}

func TestStartRefusals(t *testing.T) {
	e := newEnv(t, nil)
	outside := filepath.Join(t.TempDir(), "secret.onnx")
	require.NoError(t, os.WriteFile(outside, []byte("secret"), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(e.modelDir, "escape.onnx")))
	require.NoError(t, os.Symlink(filepath.Dir(outside), filepath.Join(e.modelDir, "escdir")))
	require.NoError(t, os.Symlink("model.onnx", filepath.Join(e.modelDir, "alias.onnx")))
	require.NoError(t, os.Mkdir(filepath.Join(e.modelDir, "sub"), 0o755))

	for _, tc := range []struct {
		name string
		req  StartRequest
		err  error
		msg  string
	}{
		{"unknown pipeline", StartRequest{Pipeline: "nope", Model: "model.onnx"}, ErrUnknownPipeline, `"nope"`},
		{"dotdot", StartRequest{Pipeline: "progress", Model: "../models/model.onnx"}, ErrInvalidModel, `".."`},
		{"absolute", StartRequest{Pipeline: "progress", Model: filepath.Join(e.modelDir, "model.onnx")}, ErrInvalidModel, "absolute"},
		{"symlink escape", StartRequest{Pipeline: "progress", Model: "escape.onnx"}, ErrInvalidModel, "outside"},
		{"symlinked dir escape", StartRequest{Pipeline: "progress", Model: "escdir/secret.onnx"}, ErrInvalidModel, "outside"},
		{"missing", StartRequest{Pipeline: "progress", Model: "missing.onnx"}, ErrInvalidModel, "not in any model directory"},
		{"directory", StartRequest{Pipeline: "progress", Model: "sub"}, ErrInvalidModel, "not a regular file"},
		{"empty model", StartRequest{Pipeline: "progress"}, ErrInvalidModel, "empty"},
		{"param above max", StartRequest{Pipeline: "progress", Model: "model.onnx", Params: map[string]any{"steps": 5000.0}}, ErrInvalidParams, `"steps": must be in [1, 1000], got 5000`},
		{"param not integer", StartRequest{Pipeline: "progress", Model: "model.onnx", Params: map[string]any{"steps": 1.5}}, ErrInvalidParams, `"steps": must be an integer`},
		{"param wrong type", StartRequest{Pipeline: "progress", Model: "model.onnx", Params: map[string]any{"steps": "ten"}}, ErrInvalidParams, `"steps": must be a number`},
		{"param undeclared", StartRequest{Pipeline: "progress", Model: "model.onnx", Params: map[string]any{"bogus": 1.0}}, ErrInvalidParams, `"bogus" is not declared`},
		{"param required", StartRequest{Pipeline: "spawner", Model: "model.onnx"}, ErrInvalidParams, `"pidfile" is required`},
		{"enum choice", StartRequest{Pipeline: "quantize-int8", Model: "model.onnx", Params: map[string]any{"mode": "int4"}}, ErrInvalidParams, `"mode": must be one of [int8 fp16]`},
		{"bad session id", StartRequest{Pipeline: "progress", Model: "model.onnx", SessionID: "a/b"}, ErrInvalidRequest, "session_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Start(tc.req)
			require.ErrorIs(t, err, tc.err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	assert.Empty(t, e.m.List(), "a refused start left a session")

	// Symlinks that stay inside are fine, and listed; escaping ones are not.
	assert.Equal(t, []string{"alias.onnx", "model.onnx"}, e.m.Models())
	id := e.startSession(StartRequest{Pipeline: "progress", Model: "alias.onnx", Params: map[string]any{"steps": 2.0}})
	require.Equal(t, protocol.TypeSessionCompleted, e.em.waitFinal(t, id, 10*time.Second).Type)
}

func TestStartIsIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	req := StartRequest{CommandID: "cmd-1", Pipeline: "progress", Model: "model.onnx", Params: map[string]any{"steps": 2.0}}
	a, err := e.m.Start(req)
	require.NoError(t, err)
	b, err := e.m.Start(req)
	require.NoError(t, err)
	assert.Equal(t, a, b)
	e.em.waitFinal(t, a.SessionID, 10*time.Second)
	assert.Len(t, e.m.List(), 1)

	// A given session id may not be reused by another command.
	_, err = e.m.Start(StartRequest{CommandID: "cmd-2", SessionID: a.SessionID, Pipeline: "progress", Model: "model.onnx"})
	require.ErrorIs(t, err, ErrInvalidRequest)

	// After a restart the journal still knows the command.
	e.stop()
	e.start(testConfig(t, e.modelDir))
	c, err := e.m.Start(req)
	require.NoError(t, err)
	assert.Equal(t, a, c)
	assert.Len(t, e.m.List(), 1)
}

func TestBusy(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxQueued = 1 })
	pidfile := filepath.Join(t.TempDir(), "pids")
	first := e.startSession(StartRequest{Pipeline: "spawner", Params: map[string]any{"pidfile": pidfile}})
	readPids(t, pidfile)
	e.startSession(StartRequest{Pipeline: "progress"})
	_, err := e.m.Start(StartRequest{Pipeline: "progress", Model: "model.onnx"})
	require.ErrorIs(t, err, ErrBusy)
	_, err = e.m.Cancel(first, "", "test")
	require.NoError(t, err)
}

func TestRetention(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Retain = 2 })
	var ids []string
	for range 3 {
		id := e.startSession(StartRequest{Pipeline: "progress", Params: map[string]any{"steps": 1.0}})
		e.em.waitFinal(t, id, 10*time.Second)
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return len(e.m.List()) == 2 }, 5*time.Second, 10*time.Millisecond)
	list := e.m.List()
	assert.Equal(t, ids[1:], []string{list[0].SessionID, list[1].SessionID})
	e.em.mu.Lock()
	assert.Equal(t, []string{protocol.MustTopics("").SessionState("r-1", ids[0])}, e.em.cleared)
	e.em.mu.Unlock()
	assert.NoDirExists(t, filepath.Join(e.stateDir, "sessions", ids[0]))
	assert.DirExists(t, filepath.Join(e.stateDir, "sessions", ids[2], "output"))

	// The journal agrees after a restart.
	e.stop()
	e.start(testConfig(t, e.modelDir))
	assert.Len(t, e.m.List(), 2)
}

func TestShutdownCancelsRunningKeepsQueued(t *testing.T) {
	e := newEnv(t, nil)
	pidfile := filepath.Join(t.TempDir(), "pids")
	running := e.startSession(StartRequest{Pipeline: "spawner", Params: map[string]any{"pidfile": pidfile}})
	queued := e.startSession(StartRequest{Pipeline: "progress", Params: map[string]any{"steps": 2.0}})
	pids := readPids(t, pidfile)
	e.stop()

	fin := e.em.final(running)
	require.NotNil(t, fin, "Run returned before reporting the running session")
	require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
	assert.Equal(t, protocol.SessionCancelled{DurationS: fin.Data.(protocol.SessionCancelled).DurationS, Reason: reasonShutdown, By: ByAgent}, fin.Data)
	requireGone(t, pids)
	evs := e.em.of(queued)
	st := evs[len(evs)-1].Data.(protocol.SessionState)
	assert.Equal(t, protocol.StatusQueued, st.Status)
	assert.Equal(t, msgAfterRestart, st.Message)

	// After the restart the queued session runs.
	e.start(testConfig(t, e.modelDir))
	require.Equal(t, protocol.TypeSessionCompleted, e.em.waitFinal(t, queued, 10*time.Second).Type)
}

func TestExampleScript(t *testing.T) {
	e := newEnv(t, nil)
	id := e.startSession(StartRequest{Pipeline: "example", Params: map[string]any{"steps": 4.0}})
	fin := e.em.waitFinal(t, id, 20*time.Second)
	require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
	res := fin.Data.(protocol.SessionCompleted).Result
	require.Len(t, res.Artifacts, 1)
	assert.Equal(t, "model.optimized.onnx", res.Artifacts[0].Path)
	assert.Equal(t, map[string]float64{"size_before": 15, "size_after": 15, "passes": 4}, res.Metrics)

	id = e.startSession(StartRequest{Pipeline: "example", Params: map[string]any{"steps": 1.0, "fail": true}})
	fin = e.em.waitFinal(t, id, 20*time.Second)
	require.Equal(t, protocol.TypeSessionFailed, fin.Type)
	assert.Contains(t, fin.Data.(protocol.SessionFailed).Error.Detail, "asked to fail")
}
