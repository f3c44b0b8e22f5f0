package hub

import "errors"

// Sentinel errors of Subscribe. Each maps to a client-visible error code of
// spec §5 (see Code).
var (
	// ErrUnknownRoom: the room name is not fleet, robot:<id> or session:<id>.
	ErrUnknownRoom = errors.New("unknown room")
	// ErrForbidden: the client's robots claim does not cover the room.
	ErrForbidden = errors.New("forbidden")
	// ErrTooManyRooms: the client is already in MaxRoomsPerClient rooms.
	ErrTooManyRooms = errors.New("too many rooms")
	// ErrClosed: the hub or the subscriber is closed.
	ErrClosed = errors.New("closed")
)

// Code returns the spec §5 error code of a hub error.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrUnknownRoom):
		return "unknown_room"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	case errors.Is(err, ErrTooManyRooms):
		return "too_many_rooms"
	}
	return "internal"
}
