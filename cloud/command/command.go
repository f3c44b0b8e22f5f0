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
}

type pending struct {
	robot string
	done  func(Result)
	timer *time.Timer
}

// Tracker tracks commands in flight. It is safe for concurrent use.
type Tracker struct {
	o Options

	mu      sync.Mutex // guards pending and closed
	pending map[string]*pending
	closed  bool
}

// New returns a Tracker.
func New(o Options) *Tracker {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10000
	}
	if o.RobotState == nil {
		o.RobotState = func(string) (string, bool) { return "", false }
	}
	return &Tracker{o: o, pending: map[string]*pending{}}
}

// Send publishes command name with args to robot. done is called exactly
// once, from another goroutine, with the reply or ErrTimeout — unless Send
// returns an error, in which case it is never called.
func (t *Tracker) Send(robot, name string, args map[string]any, replyTo any, done func(Result)) (string, error) {
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
	p := &pending{robot: robot, done: done}
	t.pending[id] = p
	p.timer = time.AfterFunc(t.o.Timeout, func() {
		if t.take(id) != nil {
			done(Result{CommandID: id, Err: ErrTimeout})
		}
	})
	t.mu.Unlock()
	if err := t.o.Publisher.Publish(t.o.Topics.Commands(robot), 1, false, payload); err != nil {
		if t.take(id) != nil {
			p.timer.Stop()
		}
		return "", fmt.Errorf("send %s to %s: %w: %v", name, robot, ErrPublish, err)
	}
	return id, nil
}

func (t *Tracker) take(id string) *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pending[id]
	delete(t.pending, id)
	return p
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
	delete(t.pending, r.CommandID)
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
	t.pending = map[string]*pending{}
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
