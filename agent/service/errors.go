package service

import "errors"

// Sentinel errors of the service package.
var (
	// ErrUnknownAction: the action is not install, uninstall, start, stop, restart or status.
	ErrUnknownAction = errors.New("unknown service action")
	// ErrHiddenPath: the executable or config lies where the unit's
	// ProtectHome=yes hides it from the service (/home, /root, /run/user).
	ErrHiddenPath = errors.New("path hidden from the service by ProtectHome=yes")
)
