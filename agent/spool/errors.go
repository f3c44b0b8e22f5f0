package spool

import "errors"

// Sentinel errors of the spool.
var (
	// ErrClosed: the outbox was used after Close.
	ErrClosed = errors.New("spool closed")
	// ErrTooLarge: one record is larger than the whole spool may hold.
	ErrTooLarge = errors.New("record larger than the spool cap")
	// ErrLocked: another process holds the spool file (a second agent on the same state dir).
	ErrLocked = errors.New("spool file is locked by another process")
	// ErrNotSpooled: the event's type is not sent at QoS 1 and does not belong in the spool.
	ErrNotSpooled = errors.New("event type is not spooled")
)
