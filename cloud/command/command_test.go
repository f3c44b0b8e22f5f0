package command_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/protocol"
)

type pub struct {
	mu   sync.Mutex
	sent []*protocol.Event
	err  error
}

func (p *pub) Publish(topic string, qos byte, retained bool, payload []byte) error {
	if p.err != nil {
		return p.err
	}
	ev, err := protocol.Decode(payload)
	if err != nil {
		return err
	}
	if topic != protocol.MustTopics("").Commands(ev.Robot) || qos != 1 || retained {
		return errors.New("wrong topic, qos or retain")
	}
	p.mu.Lock()
	p.sent = append(p.sent, ev)
	p.mu.Unlock()
	return nil
}

func reply(robot, id string) *protocol.Event {
	return protocol.NewEvent(robot, protocol.CommandReply{CommandID: id, OK: true, Result: map[string]any{"pong": true}})
}

func TestTracker(t *testing.T) {
	p := &pub{}
	tr := mustNew(t, command.Options{Publisher: p, Timeout: 200 * time.Millisecond, MaxPending: 2,
		RobotState: func(r string) (string, bool) { return map[string]string{"off": "offline"}[r], r == "off" }})
	results := make(chan command.Result, 10)
	done := func(r command.Result) { results <- r }

	id, err := tr.Send("r-1", "ping", nil, nil, done)
	require.NoError(t, err)
	require.Len(t, p.sent, 1)
	cmd := p.sent[0]
	require.Equal(t, id, cmd.ID)
	require.NotNil(t, cmd.Data.(protocol.Command).ExpiresAt)

	require.False(t, tr.Reply(reply("r-2", id), nil), "another robot cannot answer")
	require.False(t, tr.Reply(reply("r-1", "unknown"), nil))
	require.True(t, tr.Reply(reply("r-1", id), []byte("raw")))
	res := <-results
	require.NoError(t, res.Err)
	require.True(t, res.Reply.OK)
	require.False(t, tr.Reply(reply("r-1", id), nil), "answered once, then forgotten")

	_, err = tr.Send("off", "ping", nil, nil, done)
	require.ErrorIs(t, err, command.ErrRobotOffline)

	_, err = tr.Send("r-1", "ping", nil, nil, done)
	require.NoError(t, err)
	res = <-results
	require.ErrorIs(t, res.Err, command.ErrTimeout)
	require.Zero(t, tr.Pending())

	_, err = tr.Send("r-1", "a", nil, nil, done)
	require.NoError(t, err)
	_, err = tr.Send("r-1", "b", nil, nil, done)
	require.NoError(t, err)
	_, err = tr.Send("r-1", "c", nil, nil, done)
	require.ErrorIs(t, err, command.ErrTooManyPending)
	tr.Close()
	require.ErrorIs(t, (<-results).Err, command.ErrClosed)
	require.ErrorIs(t, (<-results).Err, command.ErrClosed)

	p2 := &pub{err: errors.New("down")}
	tr2 := mustNew(t, command.Options{Publisher: p2})
	_, err = tr2.Send("r-1", "ping", nil, nil, done)
	require.ErrorIs(t, err, command.ErrPublish)
	require.Zero(t, tr2.Pending())
	_, err = tr2.Send("r-1", "", nil, nil, done)
	require.ErrorIs(t, err, command.ErrInvalid)
}

// slowPub fails every publish after a delay (a broker that never acks).
type slowPub struct{ delay time.Duration }

func (p slowPub) Publish(string, byte, bool, []byte) error {
	time.Sleep(p.delay)
	return errors.New("publish timed out")
}

type principal struct{}

func (principal) CanCommand() bool     { return true }
func (principal) CanRobot(string) bool { return true }

// TestOneAnswerPerCommand: with commands.timeout shorter than the publish
// timeout, the command gets robot_timeout and nothing more (issue 9 item 12).
func TestOneAnswerPerCommand(t *testing.T) {
	tr := mustNew(t, command.Options{Publisher: slowPub{delay: 300 * time.Millisecond}, Timeout: 50 * time.Millisecond})
	answers := make(chan string, 4)
	tr.Submit(principal{}, "op", "r-1", "ping", nil, func(command.Result) { answers <- "reply" },
		func(code, _ string, _ error) { answers <- code })
	require.Equal(t, "robot_timeout", <-answers)
	time.Sleep(500 * time.Millisecond) // the publish fails after the timeout answered
	require.Empty(t, answers, "a second answer")
	require.Zero(t, tr.Pending())
}

// TestPendingPerOwner: one owner cannot take the whole pending pool.
func TestPendingPerOwner(t *testing.T) {
	tr := mustNew(t, command.Options{Publisher: &pub{}, Timeout: time.Minute, MaxPendingPerOwner: 2})
	t.Cleanup(tr.Close)
	codes := make(chan string, 10)
	fail := func(code, _ string, _ error) { codes <- code }
	for range 3 {
		tr.Submit(principal{}, "greedy", "r-1", "ping", nil, func(command.Result) {}, fail)
	}
	require.Equal(t, "rate_limited", <-codes)
	tr.Submit(principal{}, "other", "r-1", "ping", nil, func(command.Result) {}, fail)
	require.Equal(t, 3, tr.Pending(), "another owner still gets through")
	require.Empty(t, codes)
}

// TestStartSessionWithAnotherRobotsID: a start_session reusing a session id
// the relay knows for another robot is refused with bad_request.
func TestStartSessionWithAnotherRobotsID(t *testing.T) {
	p := &pub{}
	tr := mustNew(t, command.Options{Publisher: p, Timeout: time.Minute,
		SessionRobots: func(id string) []string { return map[string][]string{"s-2": {"r-2"}, "s-1": {"r-1"}}[id] }})
	t.Cleanup(tr.Close)
	codes := make(chan string, 10)
	fail := func(code, _ string, _ error) { codes <- code }
	tr.Submit(principal{}, "op", "r-1", "start_session", map[string]any{"session_id": "s-2", "pipeline": "p"}, func(command.Result) {}, fail)
	require.Equal(t, "bad_request", <-codes)
	tr.Submit(principal{}, "op", "r-1", "start_session", map[string]any{"session_id": "s-1", "pipeline": "p"}, func(command.Result) {}, fail)
	tr.Submit(principal{}, "op", "r-1", "start_session", map[string]any{"pipeline": "p"}, func(command.Result) {}, fail)
	require.Empty(t, codes)
	require.Len(t, p.sent, 2)
}

func mustNew(t *testing.T, o command.Options) *command.Tracker {
	t.Helper()
	tr, err := command.New(o)
	require.NoError(t, err)
	return tr
}

// A missing required option is an error naming it, not a panic later.
func TestNewNamesTheMissingOption(t *testing.T) {
	_, err := command.New(command.Options{})
	require.ErrorIs(t, err, command.ErrConfig)
	require.ErrorContains(t, err, "Publisher is required")
}
