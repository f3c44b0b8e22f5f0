package socketio

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

// robotOf returns the robot of an event line carrying an envelope.
func robotOf(t *testing.T, l line) string {
	t.Helper()
	return l.envelope(t).Robot
}

// TestClientFleetFollowsGrant: over Socket.IO too, a token scoped to r-1
// in fleet receives nothing of r-2 (spec §5).
func TestClientFleetFollowsGrant(t *testing.T) {
	e := start(t, nil)
	ingest(t, e.hub, protocol.TypeRobotStatus, "r-2", "", 1, nil)
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer, "r-1"), []string{"websocket"}).Type)
	d.emit("f", "subscribe_fleet", map[string]any{})
	require.Empty(t, decodeJSON[subscribedView](t, d.ack("f").Data).Snapshot)

	ingest(t, e.hub, protocol.TypeRobotStatus, "r-2", "", 2, nil)
	ingest(t, e.hub, protocol.TypeRobotAlert, "r-2", "", 3, nil)
	ingest(t, e.hub, protocol.TypeSessionQueued, "r-2", "s-2", 4, nil)
	ingest(t, e.hub, protocol.TypeSessionFailed, "r-2", "s-2", 5, nil)
	end := ingest(t, e.hub, protocol.TypeRobotAlert, "r-1", "", 1, nil)
	for {
		l := d.nextEvent()
		if l.Event == "subscribed" || l.Event == "connected" {
			continue
		}
		require.Equal(t, "r-1", robotOf(t, l), "r-2's %s reached a token scoped to r-1", l.Event)
		if l.envelope(t).ID == end.ID {
			break
		}
	}
}

// TestClientSessionsBelongToTheirRobot: a session id two robots use is two
// sessions; a viewer of one robot sees only that robot's (spec §5).
func TestClientSessionsBelongToTheirRobot(t *testing.T) {
	e := start(t, nil)
	ingest(t, e.hub, protocol.TypeSessionQueued, "r-1", "s-x", 1, nil)
	own := ingest(t, e.hub, protocol.TypeSessionState, "r-1", "s-x", 2, nil)
	ingest(t, e.hub, protocol.TypeSessionQueued, "r-2", "s-x", 100, nil)
	ingest(t, e.hub, protocol.TypeSessionState, "r-2", "s-x", 101, nil)
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer, "r-1"), []string{"websocket"}).Type)
	d.emit("s", "subscribe_session", map[string]any{"session_id": "s-x"})
	snap := decodeJSON[subscribedView](t, d.ack("s").Data).Snapshot
	require.Len(t, snap, 2)
	ev, err := protocol.Decode(snap[0])
	require.NoError(t, err)
	require.Equal(t, own.ID, ev.ID, "r-1's own state, not r-2's later one")

	ingest(t, e.hub, protocol.TypeSessionProgress, "r-2", "s-x", 102, nil)
	end := ingest(t, e.hub, protocol.TypeSessionProgress, "r-1", "s-x", 3, nil)
	for {
		l := d.next("session event", func(l line) bool { return l.Type == "event" && l.Event != "subscribed" && l.Event != "connected" })
		require.Equal(t, "r-1", robotOf(t, l), "r-2's %s reached a viewer of r-1", l.Event)
		if l.envelope(t).ID == end.ID {
			break
		}
	}
}

// TestClientLargeFleetSnapshot: a 10,000-robot fleet snapshot reaches a
// socket.io-client in parts: the ack carries the first with more true,
// `snapshot` events the rest, and every status arrives as robot_status.
func TestClientLargeFleetSnapshot(t *testing.T) {
	// Pings queue behind the snapshot; under -race on a loaded machine the
	// 10,000 events take longer than the short test heartbeat.
	e := start(t, func(o *Options) { o.PingInterval, o.PingTimeout = 5*time.Second, 20*time.Second })
	const n = 10000
	for i := range n {
		ingest(t, e.hub, protocol.TypeRobotStatus, fmt.Sprintf("r-%05d", i), "", 1, nil)
	}
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer), []string{"websocket"}).Type)
	d.emit("f", "subscribe_fleet", map[string]any{})
	var first struct {
		More     bool              `json:"more"`
		Snapshot []json.RawMessage `json:"snapshot"`
	}
	require.NoError(t, json.Unmarshal(d.ack("f").Data, &first))
	require.True(t, first.More)
	inParts, named := len(first.Snapshot), 0
	for more := true; more || named < n; {
		l := d.next("snapshot", func(l line) bool {
			return l.Type == "event" && (l.Event == "snapshot" || l.Event == "robot_status")
		})
		if l.Event == "robot_status" {
			named++
			continue
		}
		part := decodeJSON[struct {
			More     bool              `json:"more"`
			Snapshot []json.RawMessage `json:"snapshot"`
		}](t, l.Data)
		inParts += len(part.Snapshot)
		more = part.More
	}
	require.Equal(t, n, inParts)
	require.Equal(t, n, named)
}

// TestClientGapNotice: MarkGap reaches a Socket.IO client as event gap.
func TestClientGapNotice(t *testing.T) {
	e := start(t, nil)
	ingest(t, e.hub, protocol.TypeSessionQueued, "r-1", "s-1", 1, nil)
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleViewer), []string{"websocket"}).Type)
	d.emit("s", "subscribe_session", map[string]any{"session_id": "s-1"})
	d.ack("s")
	e.hub.MarkGap("r-1", "mqtt_session_lost")
	g := decodeJSON[struct{ Room, Reason string }](t, d.event("gap").Data)
	require.Equal(t, "session:s-1", g.Room)
	require.Equal(t, "mqtt_session_lost", g.Reason)
}
