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

// The error codes of spec §5, in one place for every wire format.
const (
	CodeBadRequest   = "bad_request"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeUnknownRoom  = "unknown_room"
	CodeTooManyRooms = "too_many_rooms"
	CodeRobotOffline = "robot_offline"
	CodeRobotTimeout = "robot_timeout"
	CodeRateLimited  = "rate_limited"
	CodeInternal     = "internal"
)

// Code returns the spec §5 error code of a hub error.
func Code(err error) string {
	switch {
	case errors.Is(err, ErrUnknownRoom):
		return CodeUnknownRoom
	case errors.Is(err, ErrForbidden):
		return CodeForbidden
	case errors.Is(err, ErrTooManyRooms):
		return CodeTooManyRooms
	}
	return CodeInternal
}
