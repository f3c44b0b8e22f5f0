package protocol

import (
	"errors"
	"fmt"
)

// Error codes the relay sends to dashboard clients in `error` frames
// (spec §5; Socket.IO `error` events and acks carry the same codes).
const (
	CodeBadRequest   = "bad_request"    // a malformed op or argument
	CodeUnauthorized = "unauthorized"   // no valid token, or it expired
	CodeForbidden    = "forbidden"      // the token's role or robots claim does not allow it
	CodeUnknownRoom  = "unknown_room"   // not fleet, robot:<id> or session:<id>
	CodeTooManyRooms = "too_many_rooms" // the client is in as many rooms as it may be
	CodeRobotOffline = "robot_offline"  // the robot's retained status says offline
	CodeRobotTimeout = "robot_timeout"  // no command.reply in time
	CodeRateLimited  = "rate_limited"   // too many ops, or too many pending commands
	// CodeInternal (commands.go): the relay's own failure.
)

// ClientCodes lists the client-visible error codes, in the spec's order.
var ClientCodes = []string{CodeBadRequest, CodeUnauthorized, CodeForbidden, CodeUnknownRoom, CodeTooManyRooms,
	CodeRobotOffline, CodeRobotTimeout, CodeRateLimited, CodeInternal}

// ClientError is an error a client sees: a stable code of ClientCodes and
// a message for people.
type ClientError struct {
	Code    string
	Message string
}

func (e *ClientError) Error() string { return e.Message }

// NewClientError returns a ClientError with a formatted message.
func NewClientError(code, format string, args ...any) *ClientError {
	return &ClientError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ClientCode returns the code of the first ClientError in err's chain, or
// internal.
func ClientCode(err error) string {
	var ce *ClientError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return CodeInternal
}
