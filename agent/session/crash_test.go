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
	m, err := New(testConfig(t, os.Getenv(helperModels)), "r-1", os.Getenv(helperState), protocol.MustTopics(""), newEmitter(t), nil)
	require.NoError(t, err)
	_, err = m.Start(StartRequest{CommandID: "cmd-crash", SessionID: "s-crash", Pipeline: "spawner", Model: "model.onnx",
		Params: map[string]any{"pidfile": os.Getenv(helperPidfile)}})
	require.NoError(t, err)
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
	assert.Equal(t, protocol.FailAgentRestarted, fin.Data.(protocol.SessionFailed).Error.Code)
	requireGone(t, pids)
	st := em.waitFinalState(t, "s-crash", 5*time.Second)
	assert.Equal(t, protocol.StatusFailed, st.Status)

	// The command id survived too: a redelivered start gets the first answer.
	res, err := m.Start(StartRequest{CommandID: "cmd-crash", Pipeline: "spawner", Model: "model.onnx", Params: map[string]any{"pidfile": pidfile}})
	require.NoError(t, err)
	assert.Equal(t, protocol.StartSessionResult{SessionID: "s-crash", Status: protocol.StatusQueued}, res)
}
