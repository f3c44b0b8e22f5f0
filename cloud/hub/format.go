package hub

import (
	"strings"

	"github.com/robotfleet/fleetlink/protocol"
)

// Format encodes the relay's event frames for one wire format (the JSON
// WebSocket API, later Socket.IO). The hub calls Event once per room and
// format before the fan-out, never once per client.
type Format interface {
	// Event returns the frame that carries ev into room. raw is ev's JSON
	// envelope exactly as received, already validated.
	Event(room string, ev *protocol.Event, raw []byte) ([]byte, error)
}

// RoomlessFormat is a Format whose event frames do not name their room
// (Socket.IO): a client in several of an event's rooms gets one frame, and
// the frame is encoded once per event. Formats without it get one frame
// per room (/ws).
type RoomlessFormat interface {
	Format
	Roomless()
}

func perRoom(f Format) bool {
	_, roomless := f.(RoomlessFormat)
	return !roomless
}

// Noticer is a Format that can frame relay notices (e.g. "gap").
type Noticer interface {
	// Notice returns the frame of notice name whose payload is the JSON
	// object obj.
	Notice(name string, obj []byte) []byte
}

// Room name prefixes of spec §5.
const (
	RoomFleet         = "fleet"
	RoomRobotPrefix   = "robot:"
	RoomSessionPrefix = "session:"
)

// RobotRoom returns "robot:<id>".
func RobotRoom(id string) string { return RoomRobotPrefix + id }

// SessionRoom returns "session:<id>".
func SessionRoom(id string) string { return RoomSessionPrefix + id }

// ParseRoom splits a room name into its kind ("fleet", "robot", "session")
// and id, or returns ErrUnknownRoom.
func ParseRoom(room string) (kind, id string, err error) {
	if room == RoomFleet {
		return "fleet", "", nil
	}
	if id, ok := strings.CutPrefix(room, RoomRobotPrefix); ok && protocol.ValidID(id) {
		return "robot", id, nil
	}
	if id, ok := strings.CutPrefix(room, RoomSessionPrefix); ok && protocol.ValidID(id) {
		return "session", id, nil
	}
	return "", "", ErrUnknownRoom
}

// inFleet reports whether an event type goes to room fleet (spec §5).
func inFleet(typ string) bool {
	switch typ {
	case protocol.TypeRobotStatus, protocol.TypeRobotAlert, protocol.TypeSystemStatus:
		return true
	case protocol.TypeSessionProgress:
		return false
	}
	return protocol.IsSessionType(typ)
}
