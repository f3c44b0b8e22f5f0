package command

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// cmdAt is a ping (or name) command stamped ts.
func cmdAt(t *testing.T, id, name string, args map[string]any, ts time.Time) []byte {
	t.Helper()
	ev := &protocol.Event{V: 1, Type: protocol.TypeCommand, ID: id, TS: protocol.T(ts), Robot: "r-1", Data: protocol.Command{Name: name, Args: args}}
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	return b
}

func TestMaxAgeRefusesStaleAndFutureCommands(t *testing.T) {
	d, em, _ := newDispatcher(t, nil)
	d.opts.MaxAge = 10 * time.Minute
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ts   time.Time
		msg  string
	}{
		{"an hour old", t0.Add(-time.Hour), "the command is 1h0m0s old (ts 2026-11-25T11:00:00Z, robot clock 2026-11-25T12:00:00Z; commands.max_age 10m0s): refused as stale or replayed; if it was just sent, the robot's or the sender's clock is off (check NTP)"},
		{"from the future", t0.Add(11 * time.Minute), "the command is 11m0s in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.Handle(ctx, cmdAt(t, protocol.NewID(), "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-old"}, tc.ts))
			checkReply(t, r)
			require.False(t, r.OK)
			assert.Equal(t, protocol.CodeExpired, r.Error.Code)
			assert.Contains(t, r.Error.Message, tc.msg)
		})
	}
	assert.Zero(t, em.count("s-old", protocol.TypeSessionQueued), "a stale command started a session")
	for _, ts := range []time.Time{t0.Add(-9 * time.Minute), t0.Add(9 * time.Minute)} {
		require.True(t, d.Handle(ctx, cmdAt(t, protocol.NewID(), "ping", nil, ts)).OK, "within max age")
	}
}

// The store keeps the first reply across a restart (a new dispatcher on the
// same file) and forgets the oldest ids beyond its cap.
func TestStoreSurvivesRestartAndIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "commands.db")
	st, err := OpenStore(path, 16)
	require.NoError(t, err)
	d, em, mgr := newDispatcher(t, nil)
	d.opts.Store = st
	ctx := context.Background()
	// Refused first: unknown pipeline. Nothing about it is in the journal.
	first := d.Handle(ctx, cmdAt(t, "c-1", "start_session", map[string]any{"pipeline": "nope", "model": "m.onnx", "session_id": "s-1"}, t0))
	require.Equal(t, protocol.CodeUnknownPipeline, first.Error.Code)
	require.NoError(t, st.Close())

	// "Restart": a new dispatcher, the same store file; the command comes
	// again, now naming a pipeline that exists.
	st, err = OpenStore(path, 16)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	d2 := New(mgr, Options{RobotID: "r-1", Now: func() time.Time { return t0 }, Store: st})
	again := d2.Handle(ctx, cmdAt(t, "c-1", "start_session", map[string]any{"pipeline": "sleep", "model": "m.onnx", "session_id": "s-1"}, t0))
	assert.Equal(t, first, again, "the first reply, and nothing runs")
	assert.Zero(t, em.count("s-1", protocol.TypeSessionQueued))

	for i := range 40 {
		require.True(t, d2.Handle(ctx, cmdAt(t, fmt.Sprintf("p-%d", i), "ping", nil, t0)).OK)
	}
	assert.Equal(t, 16, st.Len(), "bounded")
	_, seen, err := st.Get("c-1")
	require.NoError(t, err)
	assert.False(t, seen, "the oldest id was forgotten")
	r, seen, err := st.Get("p-39")
	require.NoError(t, err)
	require.True(t, seen)
	assert.True(t, r.OK)
}
