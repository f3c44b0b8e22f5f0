package service

import "errors"

// Sentinel errors of the service package.
var (
	// ErrUnknownAction: the action is not install, uninstall, start, stop, restart or status.
	ErrUnknownAction = errors.New("unknown service action")
)
