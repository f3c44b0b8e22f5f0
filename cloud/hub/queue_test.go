package hub_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

func msg(room, typ, key string, n int) hub.Message {
	return hub.Message{Room: room, Type: typ, Key: key, Frame: []byte(strings.Repeat("x", n))}
}

func TestQueue(t *testing.T) {
	const cap = 4096
	cases := []struct {
		name string
		run  func(t *testing.T, q *hub.Queue, s *hub.QueueStats)
	}{
		{"metrics are latest-only per robot and room", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			require.Equal(t, hub.Queued, q.Push(msg("robot:r-1", protocol.TypeRobotMetrics, "r-1", 10)))
			require.Equal(t, hub.Queued, q.Push(msg("robot:r-2", protocol.TypeRobotMetrics, "r-2", 10)))
			require.Equal(t, hub.Replaced, q.Push(msg("robot:r-1", protocol.TypeRobotMetrics, "r-1", 20)))
			got := q.Pop(nil, cap)
			require.Len(t, got, 2)
			require.Len(t, got[0].Frame, 20, "the newer frame took the older one's place")
			require.Equal(t, int64(1), s.Replaced.Load())
			require.Zero(t, q.Len())
		}},
		{"lossy types drop above the high-water mark and report it", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			for q.Len() < cap/2-200 {
				require.Equal(t, hub.Queued, q.Push(msg("session:s", protocol.TypeSessionQueued, "", 100)))
			}
			require.Equal(t, hub.Dropped, q.Push(msg("session:s", protocol.TypeSessionProgress, "", 300)))
			require.Equal(t, hub.Dropped, q.Push(msg("session:s", protocol.TypeSessionProgress, "", 300)))
			require.Equal(t, hub.Queued, q.Push(msg("session:s", protocol.TypeSessionCompleted, "", 300)), "non-lossy still queued")
			require.Nil(t, q.TakeDropped(), "not reported while over the mark")
			q.Pop(nil, cap*2)
			require.Equal(t, map[string]int{"session:s": 2}, q.TakeDropped())
			require.Nil(t, q.TakeDropped())
			require.Equal(t, int64(2), s.Dropped.Load())
		}},
		{"past the cap a new robot's metrics are dropped, not fatal", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			for q.Len() < cap-1200 {
				q.Push(msg("fleet", protocol.TypeRobotStatus, "", 500))
			}
			require.Equal(t, hub.Dropped, q.Push(msg("robot:r-1", protocol.TypeRobotMetrics, "r-1", 1000)))
			require.False(t, q.Overflowed())
			require.Equal(t, hub.Queued, q.Push(msg("robot:r-1", protocol.TypeRobotMetrics, "r-1", 100)))
			require.Equal(t, hub.Replaced, q.Push(msg("robot:r-1", protocol.TypeRobotMetrics, "r-1", 100)))
		}},
		{"past the cap the queue overflows and stays closed", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			for q.Push(msg("fleet", protocol.TypeRobotStatus, "", 500)) == hub.Queued {
			}
			require.True(t, q.Overflowed())
			require.Equal(t, hub.Closed, q.Push(msg("fleet", protocol.TypeRobotStatus, "", 1)))
			require.LessOrEqual(t, q.Len(), cap)
		}},
		{"control frames may use up to twice the cap", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			for q.Len() < cap-600 {
				q.Push(msg("fleet", protocol.TypeRobotStatus, "", 500))
			}
			require.Equal(t, hub.Queued, q.Push(msg("", "", "", 1000)))
			require.False(t, q.Overflowed())
			for q.Push(msg("", "", "", 1000)) == hub.Queued {
			}
			require.True(t, q.Overflowed())
		}},
		{"pop takes a batch by bytes, at least one", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			for i := 0; i < 5; i++ {
				q.Push(msg("fleet", protocol.TypeRobotStatus, "", 100))
			}
			require.Len(t, q.Pop(nil, 1), 1)
			require.Len(t, q.Pop(nil, 2*(100+64)), 2)
			require.Len(t, q.Pop(nil, 1<<20), 2)
			require.Zero(t, s.Bytes.Load())
		}},
		{"close releases the bytes", func(t *testing.T, q *hub.Queue, s *hub.QueueStats) {
			q.Push(msg("fleet", protocol.TypeRobotStatus, "", 100))
			q.Close()
			require.Zero(t, s.Bytes.Load())
			require.Equal(t, hub.Closed, q.Push(msg("fleet", protocol.TypeRobotStatus, "", 1)))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &hub.QueueStats{}
			tc.run(t, hub.NewQueue(cap, s), s)
		})
	}
}
