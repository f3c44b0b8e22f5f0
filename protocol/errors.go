package protocol

import "errors"

// Sentinel errors. Decode and Validate wrap them, so callers can classify a
// failure with errors.Is while users read the detailed message.
var (
	// ErrTooLarge: the payload is over MaxPayload bytes.
	ErrTooLarge = errors.New("payload too large")
	// ErrNotJSON: the payload is not a single JSON object.
	ErrNotJSON = errors.New("payload is not a JSON object")
	// ErrUnknownType: the envelope's type is not one of the catalog's types.
	ErrUnknownType = errors.New("unknown event type")
	// ErrInvalid: the event breaks a rule of the contract (see ValidationError).
	ErrInvalid = errors.New("invalid event")
	// ErrInvalidID: a robot or session id breaks the identifier rule.
	ErrInvalidID = errors.New("invalid identifier")
	// ErrInvalidTopic: a topic is not one of the contract's topics.
	ErrInvalidTopic = errors.New("invalid topic")

	// errTimeRange: a time whose UTC form is outside the years RFC 3339 can write.
	errTimeRange = errors.New("time must be within years 0000-9999 in UTC")
)
