package socketio

import "errors"

// Sentinel errors of the packet decoders. Engine.IO-level errors close the
// session (as the reference server does on a parse error); Socket.IO-level
// errors answer with an `error` event and keep the connection.
var (
	// ErrEmptyPacket: a packet has no type character.
	ErrEmptyPacket = errors.New("empty packet")
	// ErrPacketType: the packet type is not one the protocol defines.
	ErrPacketType = errors.New("unknown packet type")
	// ErrBinary: a binary packet (base64 "b" packet, BINARY_EVENT, BINARY_ACK); not supported.
	ErrBinary = errors.New("binary packets are not supported")
	// ErrAckID: the ack id is not a number that fits a JavaScript safe integer.
	ErrAckID = errors.New("bad ack id")
	// ErrPayload: the packet's JSON payload is malformed or of the wrong shape.
	ErrPayload = errors.New("bad payload")
	// ErrTooLarge: a payload is larger than MaxPayload.
	ErrTooLarge = errors.New("payload too large")
	// ErrBadArgs: an event's argument lacks a required field or has a wrong one.
	ErrBadArgs = errors.New("bad arguments")
	// ErrOption: a required option of New is missing.
	ErrOption = errors.New("socketio: bad options")
)
