package conn_test

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/internal/ratelog"
	"github.com/robotfleet/fleetlink/protocol"
)

// recWire is a wire format that records what the layer asks of it.
type recWire struct {
	mu      sync.Mutex
	results []conn.Result
	ends    []conn.Reason
	snaps   int
}

type rawFormat struct{}

func (rawFormat) Event(_ string, _ *protocol.Event, raw []byte) ([]byte, error) { return raw, nil }

func (w *recWire) Format() hub.Format { return rawFormat{} }
func (w *recWire) Snapshot(conn.Op, *hub.Parts) hub.Stream {
	w.mu.Lock()
	w.snaps++
	w.mu.Unlock()
	return nil
}
func (w *recWire) Encode(_ conn.Op, r conn.Result) [][]byte {
	w.mu.Lock()
	w.results = append(w.results, r)
	w.mu.Unlock()
	return [][]byte{[]byte("x")}
}
func (w *recWire) Queued() {}
func (w *recWire) End(r conn.Reason) {
	w.mu.Lock()
	w.ends = append(w.ends, r)
	w.mu.Unlock()
}

func (w *recWire) state() ([]conn.Result, []conn.Reason, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]conn.Result(nil), w.results...), append([]conn.Reason(nil), w.ends...), w.snaps
}

func newLayer(t *testing.T, queue int) (*conn.Layer, *hub.Hub) {
	t.Helper()
	h := hub.New(hub.Options{})
	t.Cleanup(h.Close)
	l, err := conn.New(conn.Options{Hub: h, QueueBytes: queue, OpsPerSecond: 1, OpsBurst: 2,
		Warn: ratelog.New(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Minute)})
	require.NoError(t, err)
	_, err = conn.New(conn.Options{Warn: ratelog.New(slog.Default(), time.Minute)})
	require.ErrorIs(t, err, conn.ErrOption)
	require.ErrorContains(t, err, "Hub is required")
	return l, h
}

// TestOpsAndResults: typed ops give typed results; rooms are authorized by
// the principal's grant.
func TestOpsAndResults(t *testing.T) {
	l, _ := newLayer(t, 1<<20)
	w := &recWire{}
	c := l.NewClient(w)
	c.Authenticate(&auth.Principal{Subject: "v", Role: auth.RoleViewer, Robots: []string{"r-1"}})
	t.Cleanup(c.Close)
	c.Do(conn.Op{Kind: conn.OpSubscribe, Room: "robot:r-1", SinceSeq: -1})
	c.Do(conn.Op{Kind: conn.OpSubscribe, Room: "robot:r-2", SinceSeq: -1})
	c.Do(conn.Op{Kind: conn.OpPing})
	c.Do(conn.Op{Kind: conn.OpCommand, Robot: "r-1", Name: "ping"})
	res, _, snaps := w.state()
	require.Equal(t, 1, snaps, "robot:r-1 answered with its snapshot")
	require.Len(t, res, 3)
	require.Equal(t, conn.Error, res[0].Kind)
	require.Equal(t, protocol.CodeForbidden, res[0].Code)
	require.Equal(t, conn.Pong, res[1].Kind)
	require.Equal(t, protocol.CodeForbidden, res[2].Code, "a viewer may not command")
	require.True(t, c.Allow())
	require.True(t, c.Allow())
	require.False(t, c.Allow(), "burst 2")
}

// TestSlowConsumerAndExpiry: past the queue's cap and at the token's
// expiry the layer asks the wire to end the connection.
func TestSlowConsumerAndExpiry(t *testing.T) {
	l, _ := newLayer(t, 4<<10)
	w := &recWire{}
	c := l.NewClient(w)
	c.Authenticate(&auth.Principal{Subject: "a", Role: auth.RoleAdmin, Robots: []string{"*"}, ExpiresAt: time.Now().Add(200 * time.Millisecond)})
	t.Cleanup(c.Close)
	for range 10 {
		c.Send(hub.Message{Type: protocol.TypeRobotAlert, Frame: make([]byte, 1000)})
	}
	require.Eventually(t, func() bool { _, ends, _ := w.state(); return len(ends) >= 2 }, 5*time.Second, 10*time.Millisecond)
	_, ends, _ := w.state()
	require.Equal(t, []conn.Reason{conn.ReasonSlowConsumer, conn.ReasonTokenExpired}, ends[:2])
	require.Equal(t, int64(1), l.Stats().SlowCloses.Load())
}
