package relay_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// TestSlowConsumer: a client that stops reading is closed with 4008 while a
// fast client in the same room keeps receiving everything, in order.
func TestSlowConsumer(t *testing.T) {
	cfg := testConfig()
	cfg.WS.QueueBytes = 256 << 10
	// The slow client does not read, so it cannot answer pings: on a loaded
	// machine the heartbeat would close it (4000) before its queue fills.
	cfg.WS.Heartbeat, cfg.WS.ClientGrace = time.Minute, time.Minute
	r := startRelay(t, cfg)

	fast := connect(t, r, "")
	fast.subscribe("robot:r-1")
	// The slow client has a small receive buffer and never reads after
	// subscribing.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	slowConn, _, err := d.Dial(wsURL(r), nil)
	require.NoError(t, err)
	defer slowConn.Close()
	require.NoError(t, slowConn.WriteJSON(map[string]any{"op": "subscribe", "room": "robot:r-1"}))

	rb := newRobot(t, r.BrokerURL(), "r-1")
	msg := strings.Repeat("x", 16000)
	// The fast client reads each event before the next is sent, so only
	// the slow client falls behind.
	var got []frame
	for i := 0; r.WSStats().SlowCloses.Load() == 0 || i < 20; i++ {
		require.Less(t, i, 20000, "the slow client was never closed")
		id := rb.send("", notification(msg)).ID
		fs := fast.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == id })
		got = append(got, fs...)
	}
	ids := eventIDs(t, got)
	for i, f := range got {
		require.Equal(t, "event", f.Type, "fast client: no dropped notice")
		require.Equal(t, int64(i+1), f.envelope(t).Seq, "fast client: everything in order")
	}
	require.Len(t, ids, int(rb.seq))

	// The slow client, reading at last, finds its stream ended with 4008
	// (or cut, when the close frame could not be written in time).
	slow := startReading(t, slowConn)
	err = slow.closeErr()
	// 1006 is the cut: the socket buffers were full, so the close frame
	// could not be written before the relay gave up on the client.
	if code := closeCode(err); code != -1 && code != websocket.CloseAbnormalClosure {
		require.Equal(t, 4008, code, "close: %v", err)
	}
	require.Equal(t, int64(1), r.WSStats().SlowCloses.Load())
	require.Eventually(t, func() bool { return r.WSStats().Connections.Load() == 1 }, wait, 10*time.Millisecond)
}

// TestHeartbeat: the server pings every heartbeat; a client that answers
// stays, a silent one is closed after heartbeat + grace.
func TestHeartbeat(t *testing.T) {
	cfg := testConfig()
	cfg.WS.Heartbeat = 200 * time.Millisecond
	cfg.WS.ClientGrace = 300 * time.Millisecond
	r := startRelay(t, cfg)

	alive := connect(t, r, "") // its reader answers pings
	require.Equal(t, 0.2, heartbeatOf(t, r))

	require.Eventually(t, func() bool { return r.WSStats().Connections.Load() == 1 }, wait, 5*time.Millisecond)
	silent, _, err := dial(t, r, "", nil)
	require.NoError(t, err)
	defer silent.Close()
	// Read nothing (so no pongs) until the server gives up.
	require.Eventually(t, func() bool { return r.WSStats().Connections.Load() == 2 }, wait, 5*time.Millisecond, "silent client registered")
	require.Eventually(t, func() bool { return r.WSStats().Connections.Load() == 1 }, wait, 20*time.Millisecond)
	s := startReading(t, silent)
	err = s.closeErr()
	if code := closeCode(err); code != -1 {
		require.Equal(t, 4000, code)
	}
	// The answering client is still served.
	alive.send(`{"op":"ping","ref":1}`)
	f := alive.until(func(f frame) bool { return f.Type == "pong" })
	require.Equal(t, "1", string(f[len(f)-1].Ref))
}

// heartbeatOf opens another client and returns the heartbeat_s its
// connected frame announces.
func heartbeatOf(t *testing.T, r interface{ Addr() string }) float64 {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial("ws://"+r.Addr()+"/ws", nil)
	require.NoError(t, err)
	defer conn.Close()
	var f frame
	require.NoError(t, conn.ReadJSON(&f))
	require.Equal(t, "connected", f.Type)
	require.NotEmpty(t, f.ClientID)
	return f.Heartbeat
}

// TestOversizeFrame: a frame over the read limit closes with 1009.
func TestOversizeFrame(t *testing.T) {
	cfg := testConfig()
	cfg.WS.ReadLimit = 1024
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	c.send(`{"op":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`)
	err := c.closeErr()
	require.Equal(t, websocket.CloseMessageTooBig, closeCode(err), "close: %v", err)
}

// TestMalformedFrames: each bad frame gets an error and the connection stays.
func TestMalformedFrames(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	cases := []struct {
		frame string
		code  string
	}{
		{`not json`, "bad_request"},
		{`[1,2]`, "bad_request"},
		{`{"op":"fly","ref":"a"}`, "bad_request"},
		{`{"ref":"b"}`, "bad_request"},
		{`{"op":"subscribe","ref":"c"}`, "bad_request"},
		{`{"op":"subscribe","room":"robot:bad id","ref":"d"}`, "unknown_room"},
		{`{"op":"subscribe","room":"nowhere","ref":"e"}`, "unknown_room"},
		{`{"op":"subscribe","room":"fleet","since_seq":"x","ref":"f"}`, "bad_request"},
		{`{"op":"command","robot":"r/1","name":"ping","ref":"g"}`, "bad_request"},
		{`{"op":"command","robot":"r-1","ref":"h"}`, "bad_request"},
		{`{"op":"subscribe","room":"fleet","ref":{"x":1}}`, "bad_request"},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		f := c.next()
		require.Equal(t, "error", f.Type, "frame %s → %s", tc.frame, f.raw)
		require.Equal(t, tc.code, f.Code, "frame %s → %s", tc.frame, f.raw)
		require.NotEmpty(t, f.Message)
	}
	require.NoError(t, c.conn.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}))
	require.Equal(t, "bad_request", c.next().Code)
	// ref is echoed on errors when the frame could be read.
	c.send(`{"op":"fly","ref":"zz"}`)
	require.Equal(t, `"zz"`, string(c.next().Ref))
	// "type" is accepted as an alias of "op".
	c.send(`{"type":"ping","ref":7}`)
	f := c.next()
	require.Equal(t, "pong", f.Type)
	require.Equal(t, "7", string(f.Ref))
	// unsubscribe answers unsubscribed.
	c.subscribe("fleet")
	c.send(`{"op":"unsubscribe","room":"fleet","ref":"u"}`)
	f = c.next()
	require.Equal(t, "unsubscribed", f.Type)
	require.Equal(t, "fleet", f.Room)
}

// TestClientLimits: rooms per client and ops per second.
func TestClientLimits(t *testing.T) {
	cfg := testConfig()
	cfg.WS.MaxRooms = 2
	cfg.WS.OpsPerSecond = 1
	cfg.WS.OpsBurst = 5
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	c.subscribe("robot:a")
	c.subscribe("robot:b")
	c.send(`{"op":"subscribe","room":"robot:c","ref":1}`)
	f := c.next()
	require.Equal(t, "too_many_rooms", f.Code)
	c.subscribe("robot:a") // re-subscribing a room it is in is fine
	var codes []string
	for i := 0; i < 5; i++ {
		c.send(`{"op":"ping"}`)
		f := c.next()
		codes = append(codes, f.Type+f.Code)
	}
	require.Contains(t, codes, "errorrate_limited")
}

// TestGracefulShutdown: clients are closed with 1001.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig()
	rl, err := newRelayNoCleanup(t, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Run(ctx) }()
	require.Eventually(t, rl.Ready, wait, 10*time.Millisecond)
	c := connect(t, rl, "")
	cancel()
	require.Equal(t, websocket.CloseGoingAway, closeCode(c.closeErr()))
	require.NoError(t, <-done)
}

// TestSystemStatus: system.status reaches fleet periodically.
func TestSystemStatus(t *testing.T) {
	cfg := testConfig()
	cfg.SystemStatusInterval = 100 * time.Millisecond
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	c.subscribe("fleet")
	fs := c.until(func(f frame) bool { return f.Type == "event" })
	ev := fs[len(fs)-1].envelope(t)
	require.Equal(t, protocol.TypeSystemStatus, ev.Type)
	st := ev.Data.(protocol.SystemStatus)
	require.True(t, st.Relay.MQTTConnected)
	require.Equal(t, 1, st.Relay.Connections)
}
