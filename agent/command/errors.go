package command

import "errors"

// Sentinel errors, wrapped in the messages of invalid_command replies.
var (
	// ErrNotCommand: the payload decoded, but as another event type.
	ErrNotCommand = errors.New("not a command")
	// ErrWrongRobot: the command's robot is not this agent's.
	ErrWrongRobot = errors.New("command for another robot")
	// ErrBadArgs: the command's args do not have the expected shape.
	ErrBadArgs = errors.New("bad args")
)
