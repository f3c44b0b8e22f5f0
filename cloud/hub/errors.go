package hub

import "github.com/robotfleet/fleetlink/protocol"

// Sentinel errors of Subscribe, typed with their client-visible code
// (protocol.ClientError); compare with errors.Is.
var (
	// ErrUnknownRoom: the room name is not fleet, robot:<id> or session:<id>.
	ErrUnknownRoom = &protocol.ClientError{Code: protocol.CodeUnknownRoom, Message: "unknown room"}
	// ErrForbidden: the client's robots claim does not cover the room.
	ErrForbidden = &protocol.ClientError{Code: protocol.CodeForbidden, Message: "forbidden"}
	// ErrTooManyRooms: the client is already in MaxRoomsPerClient rooms.
	ErrTooManyRooms = &protocol.ClientError{Code: protocol.CodeTooManyRooms, Message: "too many rooms"}
)

// The error codes of spec §5, for the wire adapters (defined in protocol).
const (
	CodeBadRequest   = protocol.CodeBadRequest
	CodeUnauthorized = protocol.CodeUnauthorized
	CodeForbidden    = protocol.CodeForbidden
	CodeUnknownRoom  = protocol.CodeUnknownRoom
	CodeTooManyRooms = protocol.CodeTooManyRooms
	CodeRobotOffline = protocol.CodeRobotOffline
	CodeRobotTimeout = protocol.CodeRobotTimeout
	CodeRateLimited  = protocol.CodeRateLimited
	CodeInternal     = protocol.CodeInternal
)

// Code returns the spec §5 error code of err.
func Code(err error) string { return protocol.ClientCode(err) }

// ErrClosed: the hub was closed.
var ErrClosed = &protocol.ClientError{Code: protocol.CodeInternal, Message: "relay shutting down"}
