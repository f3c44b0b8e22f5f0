package hub

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The gate lets n part writers in at once, and a writer waiting for a slot
// gives up when its client closes.
func TestSnapshotGateSlots(t *testing.T) {
	g := NewSnapshotGate(2, 0)
	never := make(chan struct{})
	require.True(t, g.Enter(never))
	require.True(t, g.Enter(never))
	var in atomic.Bool
	go func() { in.Store(g.Enter(never)) }()
	time.Sleep(50 * time.Millisecond)
	require.False(t, in.Load(), "a third writer got in past two slots")
	g.Leave()
	require.Eventually(t, in.Load, time.Second, time.Millisecond)
	require.EqualValues(t, 1, g.Waits())

	closed := make(chan struct{})
	close(closed)
	require.False(t, g.Enter(closed), "a closed client waits for no slot")
	var nilGate *SnapshotGate
	require.True(t, nilGate.Enter(never))
	require.True(t, nilGate.Pace(1<<30, never))
	nilGate.Leave()
}

// Pacing holds parts to the rate: past the burst a writer waits for the
// bytes it writes, and stops waiting when its client closes.
func TestSnapshotGatePace(t *testing.T) {
	g := NewSnapshotGate(1, 1<<20) // 1 MiB/s, burst 512 KiB (two parts)
	never := make(chan struct{})
	start := time.Now()
	require.True(t, g.Pace(2*PartBytes, never), "the burst")
	require.Less(t, time.Since(start), 100*time.Millisecond)
	require.True(t, g.Pace(PartBytes, never))
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "256 KiB past the burst at 1 MiB/s")
	closed := make(chan struct{})
	close(closed)
	start = time.Now()
	require.False(t, g.Pace(2*PartBytes, closed))
	require.Less(t, time.Since(start), 100*time.Millisecond)
	require.True(t, NewSnapshotGate(1, 0).Pace(1<<30, never), "0: no pacing")
}
