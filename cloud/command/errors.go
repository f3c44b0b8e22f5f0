package command

import "errors"

// Sentinel errors of Tracker.Send and of a command's Result.
var (
	// ErrRobotOffline: the robot's retained status says offline (spec code robot_offline).
	ErrRobotOffline = errors.New("robot offline")
	// ErrTimeout: no reply within the timeout (spec code robot_timeout).
	ErrTimeout = errors.New("robot timeout")
	// ErrTooManyPending: MaxPending commands already wait for replies.
	ErrTooManyPending = errors.New("too many pending commands")
	// ErrInvalid: the command failed validation.
	ErrInvalid = errors.New("invalid command")
	// ErrPublish: the command could not be published to the broker.
	ErrPublish = errors.New("publish command")
	// ErrClosed: the tracker was closed before the reply came.
	ErrClosed = errors.New("closed")
	// ErrConfig: New was given options it cannot work with.
	ErrConfig = errors.New("command: invalid options")
)
