// Package command carries dashboard commands to robots and their replies
// back: it builds the command envelope, publishes it on the robot's command
// topic, and routes the matching command.reply (by command id) to the one
// caller that asked, or times out. The pending set is bounded.
package command

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Publisher publishes one MQTT message (the ingest client).
type Publisher interface {
	Publish(topic string, qos byte, retained bool, payload []byte) error
}

// Result is the outcome of a command: the robot's reply or an error
// (ErrTimeout, ErrClosed).
type Result struct {
	CommandID string
	Reply     *protocol.CommandReply
	Raw       []byte // the reply's envelope
	Err       error
}

// Options configures a Tracker.
type Options struct {
	// Publisher sends commands. Required.
	Publisher Publisher
	// Topics builds the command topic. Default prefix fleet.
	Topics protocol.Topics
	// RobotState reports a robot's retained status state; "offline" makes
	// Send fail with ErrRobotOffline at once. Default: always unknown.
	RobotState func(robot string) (state string, known bool)
	// Timeout for a reply; it is also the command's expires_at. Default 10s.
	Timeout time.Duration
	// MaxPending commands waiting for replies. Default 10000.
	MaxPending int
	// MaxPendingPerOwner caps the commands one owner (a token's subject)
	// has waiting, so that one operator cannot exhaust MaxPending for
	// everyone. Default 100.
	MaxPendingPerOwner int
	// SessionRobots returns the robots the relay knows a session id for;
	// a start_session reusing another robot's id is refused. Default: none.
	SessionRobots func(session string) []string
}

type pending struct {
	robot, owner string
	done         func(Result)
	timer        *time.Timer
}

// Tracker tracks commands in flight. It is safe for concurrent use.
type Tracker struct {
	o Options

	mu      sync.Mutex // guards pending, owners and closed
	pending map[string]*pending
	owners  map[string]int // owner → commands pending
	closed  bool
}

// New returns a Tracker, or an ErrConfig error naming a missing option.
func New(o Options) (*Tracker, error) {
	if o.Publisher == nil {
		return nil, fmt.Errorf("%w: Publisher is required", ErrConfig)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10000
	}
	if o.MaxPendingPerOwner <= 0 {
		o.MaxPendingPerOwner = 100
	}
	if o.RobotState == nil {
		o.RobotState = func(string) (string, bool) { return "", false }
	}
	if o.SessionRobots == nil {
		o.SessionRobots = func(string) []string { return nil }
	}
	return &Tracker{o: o, pending: map[string]*pending{}, owners: map[string]int{}}, nil
}

// Send publishes command name with args to robot for no particular owner;
// see SendAs.
func (t *Tracker) Send(robot, name string, args map[string]any, replyTo any, done func(Result)) (string, error) {
	return t.SendAs("", robot, name, args, replyTo, done)
}

// SendAs publishes command name with args to robot on behalf of owner.
// done is called exactly once, from another goroutine, with the reply or
// ErrTimeout — unless SendAs returns an error, in which case it is never
// called: a command gets one answer.
func (t *Tracker) SendAs(owner, robot, name string, args map[string]any, replyTo any, done func(Result)) (string, error) {
	if state, known := t.o.RobotState(robot); known && state == "offline" {
		return "", fmt.Errorf("send %s to %s: %w", name, robot, ErrRobotOffline)
	}
	ev := protocol.NewEvent(robot, protocol.Command{Name: name, Args: args,
		ExpiresAt: protocol.TimePtr(time.Now().Add(t.o.Timeout)), ReplyTo: replyTo})
	payload, err := protocol.Encode(ev)
	if err != nil {
		return "", fmt.Errorf("send %s to %s: %w: %v", name, robot, ErrInvalid, err)
	}
	id := ev.ID
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return "", ErrClosed
	}
	if len(t.pending) >= t.o.MaxPending {
		t.mu.Unlock()
		return "", fmt.Errorf("send %s to %s: %w", name, robot, ErrTooManyPending)
	}
	if t.owners[owner] >= t.o.MaxPendingPerOwner {
		t.mu.Unlock()
		return "", fmt.Errorf("send %s to %s: %w: %d of this token's commands wait for replies", name, robot, ErrTooManyPending, t.o.MaxPendingPerOwner)
	}
	p := &pending{robot: robot, owner: owner, done: done}
	t.pending[id] = p
	t.owners[owner]++
	p.timer = time.AfterFunc(t.o.Timeout, func() {
		if t.take(id) != nil {
			done(Result{CommandID: id, Err: ErrTimeout})
		}
	})
	t.mu.Unlock()
	if err := t.o.Publisher.Publish(t.o.Topics.Commands(robot), 1, false, payload); err != nil {
		if t.take(id) == nil {
			// The timeout (shorter than the publish timeout) or Close
			// already answered: that answer stands, and it is the only one.
			return id, nil
		}
		p.timer.Stop()
		return "", fmt.Errorf("send %s to %s: %w: %v", name, robot, ErrPublish, err)
	}
	return id, nil
}

// take removes the pending command id and returns it, or nil when it was
// already answered.
func (t *Tracker) take(id string) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending[id]
	if p != nil {
		t.forget(id, p)
	}
	return p
}

// forget removes a pending command. Called with t.mu held.
func (t *Tracker) forget(id string, p *pending) {
	delete(t.pending, id)
	if t.owners[p.owner]--; t.owners[p.owner] <= 0 {
		delete(t.owners, p.owner)
	}
}

// Reply routes a command.reply event to the caller that sent the command and
// reports whether it was one of ours.
func (t *Tracker) Reply(ev *protocol.Event, raw []byte) bool {
	r, ok := ev.Data.(protocol.CommandReply)
	if !ok || r.CommandID == "" {
		return false
	}
	t.mu.Lock()
	p := t.pending[r.CommandID]
	if p == nil || p.robot != ev.Robot { // a robot cannot answer another's command
		t.mu.Unlock()
		return false
	}
	t.forget(r.CommandID, p)
	t.mu.Unlock()
	p.timer.Stop()
	go p.done(Result{CommandID: r.CommandID, Reply: &r, Raw: raw})
	return true
}

// Pending returns the number of commands waiting for replies.
func (t *Tracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending)
}

// Close fails every pending command with ErrClosed.
func (t *Tracker) Close() {
	t.mu.Lock()
	ps := t.pending
	t.pending, t.owners = map[string]*pending{}, map[string]int{}
	t.closed = true
	t.mu.Unlock()
	for id, p := range ps {
		if p.timer.Stop() {
			go p.done(Result{CommandID: id, Err: ErrClosed})
		}
	}
}

// MarshalResult returns the reply's result as JSON (null when absent).
func MarshalResult(r *protocol.CommandReply) json.RawMessage {
	if r == nil || r.Result == nil {
		return nil
	}
	b, err := json.Marshal(r.Result)
	if err != nil {
		return nil
	}
	return b
}
