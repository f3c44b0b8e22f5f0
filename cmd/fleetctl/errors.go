package main

import "errors"

// Sentinel errors of fleetctl's commands; run maps them to exit codes.
var (
	// errUsage: bad flags or arguments; the usage text follows (exit 2).
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
)
