package wsapi

import "errors"

// Sentinel errors of the op decoder. Each becomes an `error` frame with
// code bad_request; the connection stays.
var (
	// ErrBadFrame: the frame is not a JSON object.
	ErrBadFrame = errors.New("frame is not a JSON object")
	// ErrUnknownOp: the op is missing or not one of subscribe, unsubscribe, ping, command.
	ErrUnknownOp = errors.New("unknown op")
	// ErrBadField: a field has the wrong type or value.
	ErrBadField = errors.New("bad field")
	// ErrOption: a required option of New is missing.
	ErrOption = errors.New("wsapi: bad options")
)
