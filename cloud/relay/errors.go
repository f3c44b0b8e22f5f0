package relay

import "errors"

// Sentinel errors.
var (
	// ErrConfig: the config is invalid or names unreadable files.
	ErrConfig = errors.New("relay config")
	// ErrListen: the HTTP listener could not bind.
	ErrListen = errors.New("relay listen")
)
