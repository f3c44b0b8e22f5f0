package session

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// Environment of the helper process TestCrashHelper runs as.
const (
	helperEnv     = "SESSION_CRASH_HELPER"
	helperState   = "SESSION_CRASH_STATE"
	helperModels  = "SESSION_CRASH_MODELS"
	helperPidfile = "SESSION_CRASH_PIDFILE"
)

// TestCrashHelper is not a test: run by TestAgentKilledMidSession as a child
// process, it plays the agent, starts a spawner session and runs until it is
// killed with SIGKILL.
func TestCrashHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	em := newEmitter(t)
	m, err := New(testConfig(t, os.Getenv(helperModels)), "r-1", os.Getenv(helperState), protocol.MustTopics(""), em, nil)
	require.NoError(t, err)
	_, err = m.Start(StartRequest{CommandID: "cmd-crash", SessionID: "s-crash", Pipeline: "spawner", Model: "model.onnx",
		Params: map[string]any{"pidfile": os.Getenv(helperPidfile)}})
	require.NoError(t, err)
	go func() {
		// A progress the fleet saw is in the journal (with the process
		// group, recorded before the runner's output is read): tell the
		// test it may kill now.
		em.waitType(t, "s-crash", protocol.TypeSessionProgress, time.Minute)
		_ = os.WriteFile(os.Getenv(helperPidfile)+".progress", nil, 0o600)
	}()
	_ = m.Run(context.Background()) // until SIGKILL
}

func TestAgentKilledMidSession(t *testing.T) {
	root := t.TempDir()
	stateDir, modelDir := filepath.Join(root, "state"), filepath.Join(root, "models")
	require.NoError(t, os.MkdirAll(modelDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(modelDir, "model.onnx"), []byte("m"), 0o644))
	pidfile := filepath.Join(root, "pids")

	helper := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	helper.Env = append(os.Environ(), helperEnv+"=1", helperState+"="+stateDir, helperModels+"="+modelDir, helperPidfile+"="+pidfile)
	helper.Stdout, helper.Stderr = os.Stdout, os.Stderr
	require.NoError(t, helper.Start())
	t.Cleanup(func() { _ = helper.Process.Kill(); _, _ = helper.Process.Wait() })
	pids := readPids(t, pidfile) // grandchild, grandchild, child
	for _, p := range pids {
		require.True(t, alive(p))
	}
	require.Eventually(t, func() bool { _, err := os.Stat(pidfile + ".progress"); return err == nil }, 30*time.Second, 10*time.Millisecond,
		"the helper never emitted the session's progress")

	// kill -9 the "agent": its direct child dies with it (Pdeathsig); the
	// grandchildren are orphaned but still in the session's process group.
	require.NoError(t, helper.Process.Signal(syscall.SIGKILL))
	_, _ = helper.Process.Wait()
	requireGone(t, pids[2:])
	assert.True(t, alive(pids[0]) || alive(pids[1]), "expected orphaned grandchildren before the restart")

	// The next start kills them and reports the session failed.
	em := newEmitter(t)
	m, err := New(testConfig(t, modelDir), "r-1", stateDir, protocol.MustTopics(""), em, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	fin := em.waitFinal(t, "s-crash", 10*time.Second)
	require.Equal(t, protocol.TypeSessionFailed, fin.Type)
	ferr := fin.Data.(protocol.SessionFailed).Error
	assert.Equal(t, protocol.FailAgentRestarted, ferr.Code)
	// The failure reports where the session was, as the journal last knew it.
	assert.Equal(t, `the agent stopped while the session was running (at 10%, stage "spawned")`, ferr.Message)
	assert.Equal(t, "last progress message: children running", ferr.Detail)
	requireGone(t, pids)
	st := em.waitFinalState(t, "s-crash", 5*time.Second)
	assert.Equal(t, protocol.StatusFailed, st.Status)
	assert.EqualValues(t, 10, st.Percent)
	assert.Equal(t, "spawned", st.Stage)

	// The command id survived too: a redelivered start gets the first answer.
	res, err := m.Start(StartRequest{CommandID: "cmd-crash", Pipeline: "spawner", Model: "model.onnx", Params: map[string]any{"pidfile": pidfile}})
	require.NoError(t, err)
	assert.Equal(t, protocol.StartSessionResult{SessionID: "s-crash", Status: protocol.StatusQueued}, res)
}
