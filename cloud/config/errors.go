package config

import "errors"

// Sentinel errors.
var (
	// ErrInvalid: the config breaks a rule; the message names the field path.
	ErrInvalid = errors.New("invalid config")
	// ErrRead: the config file could not be read or parsed.
	ErrRead = errors.New("read config")
)
