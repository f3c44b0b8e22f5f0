package socketio

import (
	"strings"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

// eventNames maps envelope types to the Socket.IO event names of spec §6.
var eventNames = map[string]string{
	protocol.TypeSessionQueued:     "session_queued",
	protocol.TypeSessionStarted:    "session_started",
	protocol.TypeSessionProgress:   "session_progress",
	protocol.TypeSessionCompleted:  "session_completed",
	protocol.TypeSessionFailed:     "session_failed",
	protocol.TypeSessionCancelled:  "session_cancelled",
	protocol.TypeSessionState:      "session_state",
	protocol.TypeRobotStatus:       "robot_status",
	protocol.TypeRobotMetrics:      "robot_metrics",
	protocol.TypeRobotAlert:        "alert",
	protocol.TypeRobotNotification: "notification",
	protocol.TypeSystemStatus:      "system_status",
	protocol.TypeCommandReply:      "robot_command_reply",
}

// EventName returns the Socket.IO event name of an envelope type (spec §6).
// A type the spec does not name (a future one) gets its dots replaced by
// underscores, so it still arrives under a predictable name.
func EventName(typ string) string {
	if n, ok := eventNames[typ]; ok {
		return n
	}
	return strings.ReplaceAll(typ, ".", "_")
}

// Format is the hub.Format of the Socket.IO endpoint: it encodes an event
// into the ready Engine.IO text packet 42["<name>",<envelope>]. The frame
// does not name a room, so the hub encodes it once per event and delivers
// it once to a client in several of the event's rooms.
type Format struct{}

// Event implements hub.Format.
func (Format) Event(_ string, ev *protocol.Event, raw []byte) ([]byte, error) {
	name := EventName(ev.Type)
	return AppendEvent(make([]byte, 0, len(raw)+len(name)+6), name, raw), nil
}

// Roomless implements hub.RoomlessFormat.
func (Format) Roomless() {}

// Notice implements hub.Noticer: the event name with obj as its argument.
func (Format) Notice(name string, obj []byte) []byte { return AppendEvent(nil, name, obj) }

var (
	_ hub.RoomlessFormat = Format{}
	_ hub.Noticer        = Format{}
)
