package main

import "errors"

// Sentinel errors of fleetctl's commands; exitCode maps them to exit codes.
var (
	// errUsage: bad flags, arguments or broker options (exit 2).
	errUsage = errors.New("usage")
	// errInvalidEvents: validate read input that is not a valid event.
	errInvalidEvents = errors.New("invalid events")
	// errNoReply: the robot did not answer a command in time.
	errNoReply = errors.New("no reply")
	// errCommandFailed: the robot answered a command with ok=false.
	errCommandFailed = errors.New("command failed")
	// errNoRobots: doctor found no retained status or metrics for any robot.
	errNoRobots = errors.New("no robots found")
	// errChecksFailed: at least one of doctor's checks is FAIL.
	errChecksFailed = errors.New("checks failed")
	// errSessionFailed: a followed session ended failed (exit 3).
	errSessionFailed = errors.New("session failed")
	// errSessionCancelled: a followed session ended cancelled (exit 4).
	errSessionCancelled = errors.New("session cancelled")
	// errSessionTimeout: a followed session failed with code timeout (exit 5).
	errSessionTimeout = errors.New("session timed out")
	// errUnknownSession: session follow heard nothing of the session.
	errUnknownSession = errors.New("unknown session")
	// errFollowTimeout: --follow-timeout passed before the session ended.
	errFollowTimeout = errors.New("session still running")
)
