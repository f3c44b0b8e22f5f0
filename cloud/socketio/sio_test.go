package socketio

import (
	"encoding/json"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

// These tests drive the endpoint with the real socket.io-client (npm),
// through scripts/sio/drive.js.

type subscribedView struct {
	SessionID string            `json:"session_id"`
	RobotID   string            `json:"robot_id"`
	Room      string            `json:"room"`
	Recovered bool              `json:"recovered"`
	Snapshot  []json.RawMessage `json:"snapshot"`
}

func TestClientTransports(t *testing.T) {
	tests := []struct {
		name       string
		transports []string
		first      string // transport at connect
		upgrade    bool   // expect an upgrade to websocket
	}{
		{"polling only", []string{"polling"}, "polling", false},
		{"websocket only", []string{"websocket"}, "websocket", false},
		{"default with upgrade", nil, "polling", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, nil)
			const robot, sess = "r-001", "s-1"
			ingest(t, e.hub, protocol.TypeSessionStarted, robot, sess, 1, nil)
			ingest(t, e.hub, protocol.TypeSessionState, robot, sess, 2, nil)

			d := newDriver(t)
			c := d.connect(e.ts.URL, token(t, auth.RoleViewer), tc.transports)
			require.Equal(t, "connect", c.Type, c.raw)
			require.Equal(t, tc.first, d.next("open", func(l line) bool { return l.Type == "open" }).Transport)
			conn := decodeJSON[struct {
				ClientID   string `json:"client_id"`
				ServerTime string `json:"server_time"`
			}](t, d.event("connected").Data)
			assert.NotEmpty(t, conn.ClientID)
			assert.NotEmpty(t, conn.ServerTime)
			if tc.upgrade {
				u := d.next("upgrade", func(l line) bool { return l.Type == "upgrade" })
				require.Equal(t, "websocket", u.Transport)
			}

			// ping → pong, through the ack and as an event.
			d.emit("p1", "ping", map[string]any{"timestamp": 12345})
			pong := decodeJSON[struct {
				Timestamp  json.RawMessage `json:"timestamp"`
				ServerTime string          `json:"server_time"`
			}](t, d.ack("p1").Data)
			assert.JSONEq(t, "12345", string(pong.Timestamp))
			assert.NotEmpty(t, pong.ServerTime)
			d.event("pong")

			// subscribe_session: ack and `subscribed` with the snapshot, then
			// the snapshot as named events, then live events in order.
			d.emit("s1", "subscribe_session", map[string]any{"session_id": sess})
			ack := decodeJSON[subscribedView](t, d.ack("s1").Data)
			assert.Equal(t, sess, ack.SessionID)
			assert.False(t, ack.Recovered)
			require.Len(t, ack.Snapshot, 2)
			sub := decodeJSON[subscribedView](t, d.event("subscribed").Data)
			assert.Equal(t, ack, sub)
			assert.Equal(t, "session_state", d.nextEvent().Event)
			assert.Equal(t, "session_started", d.nextEvent().Event)

			for seq := int64(3); seq <= 5; seq++ {
				ingest(t, e.hub, protocol.TypeSessionProgress, robot, sess, seq, nil)
			}
			ingest(t, e.hub, protocol.TypeSessionCompleted, robot, sess, 6, nil)
			for seq := int64(3); seq <= 5; seq++ {
				l := d.nextEvent()
				require.Equal(t, "session_progress", l.Event, l.raw)
				ev := l.envelope(t)
				assert.Equal(t, seq, ev.Seq)
				assert.Equal(t, sess, ev.Session)
			}
			l := d.nextEvent()
			require.Equal(t, "session_completed", l.Event, l.raw)
			assert.Equal(t, int64(6), l.envelope(t).Seq)

			d.emit("u1", "unsubscribe_session", map[string]any{"session_id": sess})
			assert.Equal(t, sess, decodeJSON[subscribedView](t, d.ack("u1").Data).SessionID)
			d.event("unsubscribed")

			// The client answers the server's heartbeat on every transport
			// and stays connected.
			require.Eventually(t, func() bool { return e.srv.Stats().Pongs.Load() >= 3 }, 10*time.Second, 20*time.Millisecond)
			d.emit("p2", "ping", nil)
			require.Equal(t, "ack", d.ack("p2").Type)
			for _, l := range d.pending {
				assert.NotEqual(t, "disconnect", l.Type, l.raw)
			}
			assert.Zero(t, e.srv.Stats().HeartbeatTimeouts.Load())
		})
	}
}

func TestClientConnectError(t *testing.T) {
	e := start(t, nil)
	for _, tok := range []string{"not-a-token", ""} {
		d := newDriver(t)
		c := d.connect(e.ts.URL, tok, nil)
		require.Equal(t, "connect_error", c.Type, c.raw)
		assert.Equal(t, "unauthorized", c.Message)
		data := decodeJSON[struct {
			Code string `json:"code"`
		}](t, c.Data)
		assert.Equal(t, "unauthorized", data.Code)
	}
}

func TestClientResumeSinceSeq(t *testing.T) {
	e := start(t, nil)
	const robot, sess = "r-002", "s-resume"
	d := newDriver(t)
	d.send(map[string]any{"op": "connect", "url": e.ts.URL, "token": token(t, auth.RoleViewer), "reconnection": true})
	d.next("connect", func(l line) bool { return l.Type == "connect" })
	ingest(t, e.hub, protocol.TypeSessionStarted, robot, sess, 10, nil)
	d.emit("s1", "subscribe_session", map[string]any{"session_id": sess})
	d.ack("s1")
	d.event("subscribed")
	d.event("session_started")
	ingest(t, e.hub, protocol.TypeSessionProgress, robot, sess, 11, nil)
	require.Equal(t, int64(11), d.event("session_progress").envelope(t).Seq)

	// The network drops; events go on meanwhile.
	d.send(map[string]any{"op": "drop"})
	d.next("disconnect", func(l line) bool { return l.Type == "disconnect" })
	ingest(t, e.hub, protocol.TypeSessionProgress, robot, sess, 12, nil)
	ingest(t, e.hub, protocol.TypeSessionProgress, robot, sess, 13, nil)
	d.next("reconnect", func(l line) bool { return l.Type == "connect" })

	d.emit("s2", "subscribe_session", map[string]any{"session_id": sess, "since_seq": 11})
	ack := decodeJSON[subscribedView](t, d.ack("s2").Data)
	d.event("subscribed")
	assert.True(t, ack.Recovered)
	require.Len(t, ack.Snapshot, 2)
	for _, want := range []int64{12, 13} {
		l := d.event("session_progress")
		assert.Equal(t, want, l.envelope(t).Seq)
	}
}

func TestClientRoomsAndNames(t *testing.T) {
	e := start(t, nil)
	const robot = "r-003"
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer), []string{"websocket"}).Type)
	d.event("connected")
	d.emit("f", "subscribe_fleet", map[string]any{})
	assert.Equal(t, "fleet", decodeJSON[subscribedView](t, d.ack("f").Data).Room)
	d.event("subscribed")
	d.emit("r", "subscribe_robot", map[string]any{"robot_id": robot})
	assert.Equal(t, robot, decodeJSON[subscribedView](t, d.ack("r").Data).RobotID)
	d.event("subscribed")

	// One of each type; robot.status goes to fleet and robot:<id> but
	// arrives once.
	types := []struct{ typ, name string }{
		{protocol.TypeRobotStatus, "robot_status"},
		{protocol.TypeRobotMetrics, "robot_metrics"},
		{protocol.TypeRobotAlert, "alert"},
		{protocol.TypeRobotNotification, "notification"},
		{protocol.TypeSessionQueued, "session_queued"},
		{protocol.TypeSessionStarted, "session_started"},
		{protocol.TypeSessionFailed, "session_failed"},
		{protocol.TypeSessionCancelled, "session_cancelled"},
	}
	for i, tc := range types {
		ingest(t, e.hub, tc.typ, robot, "s-names", int64(i+1), nil)
	}
	e.hub.SystemStatus(protocol.RelayStats{Version: "test"})
	for _, tc := range types {
		l := d.nextEvent()
		require.Equal(t, tc.name, l.Event, l.raw)
		assert.Equal(t, tc.typ, l.envelope(t).Type)
	}
	require.Equal(t, "system_status", d.nextEvent().Event)

	// After unsubscribe_robot, metrics (robot room only) stop; status still
	// comes through fleet.
	d.emit("u", "unsubscribe_robot", map[string]any{"robot_id": robot})
	d.ack("u")
	d.event("unsubscribed")
	ingest(t, e.hub, protocol.TypeRobotMetrics, robot, "", 20, nil)
	ingest(t, e.hub, protocol.TypeRobotStatus, robot, "", 21, nil)
	l := d.nextEvent()
	require.Equal(t, "robot_status", l.Event, l.raw)
	assert.Equal(t, int64(21), l.envelope(t).Seq)
}

func TestClientErrors(t *testing.T) {
	e := start(t, nil)
	ingest(t, e.hub, protocol.TypeSessionStarted, "r-2", "s-other", 1, nil)
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer, "r-1"), nil).Type)
	tests := []struct {
		event string
		arg   any
		code  string
	}{
		{"subscribe_robot", map[string]any{"robot_id": "r-2"}, hub.CodeForbidden},
		{"subscribe_session", map[string]any{"session_id": "s-other"}, hub.CodeForbidden},
		{"subscribe_session", map[string]any{"session_id": "bad/id"}, hub.CodeBadRequest},
		{"subscribe_session", map[string]any{"session_id": "s-1", "since_seq": -1}, hub.CodeBadRequest},
		{"subscribe_robot", 42, hub.CodeBadRequest},
		{"no_such_event", map[string]any{}, hub.CodeBadRequest},
		{"command", map[string]any{"robot": "r-1", "name": "ping"}, hub.CodeForbidden}, // viewer
	}
	for i, tc := range tests {
		ref := tc.event + string(rune('a'+i))
		d.emit(ref, tc.event, tc.arg)
		got := decodeJSON[struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}](t, d.ack(ref).Data)
		assert.Equal(t, tc.code, got.Code, "%s %v: %s", tc.event, tc.arg, got.Message)
		assert.NotEmpty(t, got.Message)
		ev := decodeJSON[struct {
			Code string `json:"code"`
		}](t, d.event("error").Data)
		assert.Equal(t, tc.code, ev.Code)
	}
	// Allowed rooms still work.
	d.emit("ok", "subscribe_robot", map[string]any{"robot_id": "r-1"})
	assert.Equal(t, "r-1", decodeJSON[subscribedView](t, d.ack("ok").Data).RobotID)
}
