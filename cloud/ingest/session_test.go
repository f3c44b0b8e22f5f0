package ingest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/ingest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/tcpproxy"
	"github.com/robotfleet/fleetlink/protocol"
)

const wait = 15 * time.Second

// collector is a hub subscriber that records the ids of the events it gets.
type collector struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (c *collector) Format() hub.Format { return raw{} }
func (c *collector) Send(m hub.Message) {
	var ev struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(m.Frame, &ev) == nil && ev.ID != "" {
		c.mu.Lock()
		c.ids[ev.ID] = true
		c.mu.Unlock()
	}
}

func (c *collector) has(ids []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if c.ids[id] {
			n++
		}
	}
	return n
}

// gaps records OnGap calls.
type gaps struct {
	mu   sync.Mutex
	list [][2]string
}

func (g *gaps) add(robot, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.list = append(g.list, [2]string{robot, reason})
}

func (g *gaps) get() [][2]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][2]string(nil), g.list...)
}

type fixture struct {
	c    *ingest.Client
	h    *hub.Hub
	col  *collector
	gaps *gaps
}

// runIngest starts an ingest client with o (Hub, OnGap, Logger and short
// timers filled in) and a collector on room robot:r-1.
func runIngest(t *testing.T, o ingest.Options) *fixture {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f := &fixture{h: hub.New(hub.Options{Logger: quiet}), col: &collector{ids: map[string]bool{}}, gaps: &gaps{}}
	o.Hub, o.OnGap, o.Logger = f.h, f.gaps.add, quiet
	if o.ReconnectMin == 0 {
		o.ReconnectMin, o.ReconnectMax, o.ConnectTimeout = 50*time.Millisecond, 300*time.Millisecond, 2*time.Second
	}
	if o.ClientID == "" {
		o.ClientID = "relay-" + t.Name()
	}
	c, err := ingest.New(o)
	require.NoError(t, err)
	f.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	hctx, hcancel := context.WithCancel(context.Background())
	hdone := make(chan struct{})
	go func() { defer close(hdone); _ = f.h.Run(hctx) }()
	t.Cleanup(func() { cancel(); <-done; hcancel(); <-hdone })
	require.Eventually(t, c.Ready, wait, 10*time.Millisecond)
	require.NoError(t, f.h.Subscribe(f.col, anyone{}, "robot:r-1", -1, func(hub.Snapshot) {}))
	return f
}

// publisher is a robot publishing QoS 1 notifications straight to a broker.
type publisher struct {
	t   *testing.T
	c   mqtt.Client
	seq int64
}

func newPublisher(t *testing.T, url string) *publisher {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(url).SetClientID("r-1-" + protocol.NewID()[20:]).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(10) })
	return &publisher{t: t, c: c}
}

// publish sends n events and waits for each PUBACK: the broker owns them.
func (p *publisher) publish(n int) []string {
	p.t.Helper()
	var ids []string
	topic := protocol.MustTopics("").Notifications("r-1")
	for i := 0; i < n; i++ {
		p.seq++
		ev := protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "n"})
		ev.Seq = p.seq
		b, err := protocol.Encode(ev)
		require.NoError(p.t, err)
		tok := p.c.Publish(topic, 1, false, b)
		require.True(p.t, tok.WaitTimeout(wait))
		require.NoError(p.t, tok.Error())
		ids = append(ids, ev.ID)
	}
	return ids
}

// TestCutKeepsEvents: events published while the relay's path to the broker
// is cut are queued by the broker in the relay's persistent session and
// arrive after the path is back, on mochi and on Mosquitto. With a clean
// session (the old behaviour) none of them arrive.
func TestCutKeepsEvents(t *testing.T) {
	brokers := map[string]func(t *testing.T) string{
		"mochi":     func(t *testing.T) string { return brokertest.StartMochi(t).Addr },
		"mosquitto": func(t *testing.T) string { return brokertest.StartMosquitto(t).Addr() },
	}
	for name, start := range brokers {
		t.Run(name, func(t *testing.T) {
			addr := start(t)
			px, err := tcpproxy.New(addr)
			require.NoError(t, err)
			t.Cleanup(func() { px.Close() })
			f := runIngest(t, ingest.Options{Broker: "tcp://" + px.Addr()})
			pub := newPublisher(t, "tcp://"+addr)
			before := pub.publish(3)
			require.Eventually(t, func() bool { return f.col.has(before) == 3 }, wait, 10*time.Millisecond)

			px.Cut()
			require.Eventually(t, func() bool { return !f.c.Connected() }, wait, 10*time.Millisecond)
			during := pub.publish(40)
			px.Restore()
			require.Eventually(t, func() bool { return f.col.has(during) == 40 }, wait, 20*time.Millisecond,
				"events published during the cut reached the hub: %d of 40", f.col.has(during))
			require.Empty(t, f.gaps.get(), "the broker kept the session: no gap")
		})
	}
}

// TestBlackholeKeepsEvents: a silent network (no reset) ends in a keep-alive
// timeout; the events published meanwhile still arrive.
func TestBlackholeKeepsEvents(t *testing.T) {
	m := brokertest.StartMochi(t)
	px, err := tcpproxy.New(m.Addr)
	require.NoError(t, err)
	t.Cleanup(func() { px.Close() })
	f := runIngest(t, ingest.Options{Broker: "tcp://" + px.Addr(), KeepAlive: time.Second})
	pub := newPublisher(t, m.URL())
	px.Blackhole()
	during := pub.publish(20)
	px.Restore()
	require.Eventually(t, func() bool { return f.col.has(during) == 20 }, wait, 20*time.Millisecond)
}

// TestSessionLostIsAGap: a broker that lost its state (Mosquitto without
// persistence, restarted) answers the reconnect with session present =
// false; the client reports a gap for every robot.
func TestSessionLostIsAGap(t *testing.T) {
	ms := brokertest.StartMosquitto(t, brokertest.Options{Extra: "persistence false"})
	f := runIngest(t, ingest.Options{Broker: ms.URL()})
	require.Empty(t, f.gaps.get(), "the first connection is no gap")
	ms.Stop()
	require.Eventually(t, func() bool { return !f.c.Connected() }, wait, 10*time.Millisecond)
	ms.Start()
	require.Eventually(t, func() bool { return len(f.gaps.get()) == 1 }, wait, 10*time.Millisecond)
	require.Equal(t, [2]string{"", ingest.GapSessionLost}, f.gaps.get()[0])
	require.Eventually(t, f.c.Ready, wait, 10*time.Millisecond)
	// Events flow again through the new subscription.
	ids := newPublisher(t, ms.URL()).publish(2)
	require.Eventually(t, func() bool { return f.col.has(ids) == 2 }, wait, 10*time.Millisecond)
}

// TestPersistentRestartNoGap: Mosquitto with persistence keeps the session
// across its restart: no gap.
func TestPersistentRestartNoGap(t *testing.T) {
	ms := brokertest.StartMosquitto(t)
	f := runIngest(t, ingest.Options{Broker: ms.URL()})
	ms.Stop()
	require.Eventually(t, func() bool { return !f.c.Connected() }, wait, 10*time.Millisecond)
	ms.Start()
	require.Eventually(t, f.c.Ready, wait, 10*time.Millisecond)
	ids := newPublisher(t, ms.URL()).publish(2)
	require.Eventually(t, func() bool { return f.col.has(ids) == 2 }, wait, 10*time.Millisecond)
	require.Empty(t, f.gaps.get())
}

// TestFailover: with two brokers, killing the one in use moves the client to
// the other; its session there is new, so that is a gap.
func TestFailover(t *testing.T) {
	a := brokertest.StartMosquitto(t)
	b := brokertest.StartMosquitto(t)
	f := runIngest(t, ingest.Options{Brokers: []string{a.URL() + "," + b.URL()}})
	require.Equal(t, a.URL(), f.c.Broker())
	a.Stop()
	require.Eventually(t, func() bool { return f.c.Ready() && f.c.Broker() == b.URL() }, wait, 10*time.Millisecond)
	ids := newPublisher(t, b.URL()).publish(2)
	require.Eventually(t, func() bool { return f.col.has(ids) == 2 }, wait, 10*time.Millisecond)
	require.Contains(t, f.gaps.get(), [2]string{"", ingest.GapSessionLost})
}

func TestDefaultClientID(t *testing.T) {
	id := ingest.DefaultClientID()
	require.Regexp(t, `^fleet-relay-[A-Za-z0-9._-]+$`, id)
	require.Equal(t, id, ingest.DefaultClientID(), "stable")
}

// lockedBuf is a log sink safe for concurrent writers.
type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// TestSameClientIDWarns: two relays sharing a client id take the session
// from each other at every connect; the client says so in its log.
func TestSameClientIDWarns(t *testing.T) {
	m := brokertest.StartMochi(t)
	logs := &lockedBuf{}
	for i := 0; i < 2; i++ {
		c, err := ingest.New(ingest.Options{Broker: m.URL(), ClientID: "same-id", Hub: hub.New(hub.Options{}),
			ReconnectMin: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "another relay using the same client id") },
		wait, 50*time.Millisecond)
}
