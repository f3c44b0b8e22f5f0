package broker

import "errors"

// Sentinel errors.
var (
	// ErrConfig: the broker options are unusable.
	ErrConfig = errors.New("embedded broker config")
	// ErrListen: a listener could not bind.
	ErrListen = errors.New("embedded broker listen")
)
