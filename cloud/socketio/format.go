package socketio

import (
	"strings"
	"sync"

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
// into the ready Engine.IO text packet 42["<name>",<envelope>].
//
// The frame does not depend on the room, so Format hands the hub the same
// bytes for every room an event goes to. The hub delivers an event to its
// rooms one after another under its lock; remembering the last event lets
// the frame be built once per event instead of once per room, and lets a
// client in several of those rooms (fleet and robot:<id>) recognise the
// repeat by identity and receive the event once.
type Format struct {
	mu    sync.Mutex // guards last and frame
	last  *protocol.Event
	frame []byte
}

// Event implements hub.Format.
func (f *Format) Event(_ string, ev *protocol.Event, raw []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ev == f.last && f.frame != nil {
		return f.frame, nil
	}
	name := EventName(ev.Type)
	b := AppendEvent(make([]byte, 0, len(raw)+len(name)+6), name, raw)
	f.last, f.frame = ev, b
	return b, nil
}

var _ hub.Format = (*Format)(nil)
