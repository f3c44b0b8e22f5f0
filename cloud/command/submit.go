package command

import (
	"errors"
	"github.com/robotfleet/fleetlink/cloud/hub"

	"github.com/robotfleet/fleetlink/protocol"
)

// Principal is what Submit needs to know of the asking client
// (auth.Principal).
type Principal interface {
	CanCommand() bool
	CanRobot(id string) bool
}

// Submit authorizes a dashboard's command and sends it on behalf of owner
// (the token's subject; pending commands are capped per owner): the one
// path both wire formats take. Exactly one of reply and fail is called,
// once, fail at once for a refusal and later for robot_timeout. A nil
// Tracker refuses every command with internal. fail's err is non-nil when
// the failure is the relay's own and deserves a log line.
func (t *Tracker) Submit(p Principal, owner, robot, name string, args map[string]any, reply func(Result), fail func(code, msg string, err error)) {
	if err := protocol.CheckID("robot", robot); err != nil {
		fail(hub.CodeBadRequest, err.Error(), nil)
		return
	}
	switch {
	case name == "":
		fail(hub.CodeBadRequest, "name is required", nil)
		return
	case !p.CanCommand():
		fail(hub.CodeForbidden, "this token's role may not send commands", nil)
		return
	case !p.CanRobot(robot):
		fail(hub.CodeForbidden, "token does not cover robot "+robot, nil)
		return
	case t == nil:
		fail(hub.CodeInternal, "commands are not available", nil)
		return
	}
	if name == "start_session" {
		// Sessions belong to their robot (spec §5): an id the relay knows
		// for another robot would mix two robots' sessions in one room.
		if sid, _ := args["session_id"].(string); sid != "" {
			for _, r := range t.o.SessionRobots(sid) {
				if r != robot {
					fail(hub.CodeBadRequest, "session_id "+sid+" is already used by another robot", nil)
					return
				}
			}
		}
	}
	_, err := t.SendAs(owner, robot, name, args, nil, func(res Result) {
		switch {
		case res.Err == nil:
			reply(res)
		case errors.Is(res.Err, ErrTimeout):
			fail(hub.CodeRobotTimeout, "no reply from "+robot+" in time", nil)
		default:
			fail(hub.CodeInternal, res.Err.Error(), res.Err)
		}
	})
	switch {
	case err == nil:
	case errors.Is(err, ErrRobotOffline):
		fail(hub.CodeRobotOffline, "robot "+robot+" is offline", nil)
	case errors.Is(err, ErrTooManyPending):
		fail(hub.CodeRateLimited, err.Error(), nil)
	case errors.Is(err, ErrInvalid):
		fail(hub.CodeBadRequest, err.Error(), nil)
	default:
		fail(hub.CodeInternal, err.Error(), err)
	}
}
