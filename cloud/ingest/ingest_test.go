package ingest_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/ingest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// stuck is a subscriber that blocks the hub (which real subscribers never
// do) so the ingest queue backs up.
type stuck struct{ release chan struct{} }

func (s *stuck) Format() hub.Format { return raw{} }
func (s *stuck) Send(hub.Message)   { <-s.release }

type raw struct{}

func (raw) Event(_ string, _ *protocol.Event, b []byte) ([]byte, error) { return b, nil }

type anyone struct{}

func (anyone) CanRobot(string) bool { return true }
func (anyone) AllRobots() bool      { return true }

// TestBoundedQueue: when decoding falls behind, paho's callback never
// blocks; what does not fit the queue is dropped and counted, and the
// connection stays up.
func TestBoundedQueue(t *testing.T) {
	m := brokertest.StartMochi(t)
	h := hub.New(hub.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var mu sync.Mutex
	var gapsSeen [][2]string
	c, err := ingest.New(ingest.Options{Broker: m.URL(), Hub: h, QueueMessages: 4, ClientID: "relay-bounded",
		OnGap: func(robot, reason string) {
			mu.Lock()
			gapsSeen = append(gapsSeen, [2]string{robot, reason})
			mu.Unlock()
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, c.Ready, 5*time.Second, 10*time.Millisecond)

	s := &stuck{release: make(chan struct{})}
	require.NoError(t, h.Subscribe(s, anyone{}, "robot:r-1", -1, func(hub.Snapshot) {}))

	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("pub"))
	tok := pub.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	defer pub.Disconnect(10)
	topic := protocol.MustTopics("").Notifications("r-1")
	for i := 0; i < 50; i++ {
		ev := protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "n"})
		ev.Seq = int64(i + 1)
		b, err := protocol.Encode(ev)
		require.NoError(t, err)
		tok := pub.Publish(topic, 1, false, b)
		require.True(t, tok.WaitTimeout(5*time.Second))
	}
	require.Eventually(t, func() bool { return c.Stats().Dropped.Load() > 0 }, 5*time.Second, 10*time.Millisecond)

	require.True(t, c.Connected(), "the connection survives a stalled consumer")
	require.Eventually(t, func() bool { return c.Stats().MessagesIn.Load() == 50 }, 5*time.Second, 10*time.Millisecond,
		"every message reached the callback")
	close(s.release)
	// Once the decoder runs again it reports the dropped messages as a gap
	// of their robot.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(gapsSeen) > 0
	}, 5*time.Second, 10*time.Millisecond, "the dropped messages are reported as a gap")
	mu.Lock()
	require.Equal(t, [2]string{"r-1", ingest.GapQueueFull}, gapsSeen[0])
	mu.Unlock()
}

func TestBadURL(t *testing.T) {
	h := hub.New(hub.Options{})
	for _, u := range []string{"", "localhost:1883", "http://x:1", "tcp://"} {
		_, err := ingest.New(ingest.Options{Broker: u, Hub: h})
		require.ErrorIs(t, err, ingest.ErrConfig, u)
	}
}
