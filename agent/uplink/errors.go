package uplink

import "errors"

// Sentinel errors of the uplink.
var (
	// ErrNotConnected: a direct publish was attempted while no connection is up (the message is dropped and counted).
	ErrNotConnected = errors.New("not connected to the broker")
	// ErrConnectionLost: the broker connection went away; the uplink reconnects.
	ErrConnectionLost = errors.New("connection lost")
	// ErrBadBroker: the broker URL or its TLS files are unusable.
	ErrBadBroker = errors.New("bad broker settings")
)
