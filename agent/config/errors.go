package config

import "errors"

// Sentinel errors of the config package.
var (
	// ErrInvalid: a config option breaks a rule; the message names the field path and the rule.
	ErrInvalid = errors.New("invalid config")
	// ErrRead: the config file exists but cannot be read or parsed.
	ErrRead = errors.New("cannot read config")
)
