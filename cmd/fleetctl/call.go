package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

// callOpts says how to send one command.
type callOpts struct {
	Timeout time.Duration // how long to wait for the reply
	// Expires: the robot refuses the command after this long; 0 means never.
	Expires time.Duration
}

// callResult is a robot's answer to one command.
type callResult struct {
	Command *protocol.Event // what was sent
	Reply   *protocol.Event // the command.reply envelope
	Data    protocol.CommandReply
	RTT     time.Duration // publish to reply
}

// call publishes a command to robot and waits for the matching
// command.reply. It returns errNoReply (with the robot's last known status)
// when none comes within opts.Timeout, and the reply with an error wrapping
// errCommandFailed when the robot says ok=false.
func call(ctx context.Context, client mqtt.Client, mc *mqttConfig, robot, name string, args map[string]any, opts callOpts) (*callResult, error) {
	if args == nil {
		args = map[string]any{}
	}
	cmd := protocol.Command{Name: name, Args: args}
	if opts.Expires > 0 {
		cmd.ExpiresAt = protocol.TimePtr(time.Now().Add(opts.Expires))
	}
	ev := protocol.NewEvent(robot, cmd)
	payload, err := protocol.Encode(ev)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	topics := mc.Topics
	replies := make(chan *protocol.Event, 1)
	var status atomic.Pointer[protocol.Event] // the robot's latest status, for the timeout message
	onReply := func(_ mqtt.Client, m mqtt.Message) {
		r, err := protocol.Decode(m.Payload())
		if err != nil {
			return // not ours to judge here: watch and doctor report bad payloads
		}
		if d, ok := r.Data.(protocol.CommandReply); ok && d.CommandID == ev.ID {
			select {
			case replies <- r:
			default: // a QoS 1 redelivery of the reply we have
			}
		}
	}
	onStatus := func(_ mqtt.Client, m mqtt.Message) {
		if s, err := protocol.Decode(m.Payload()); err == nil {
			status.Store(s)
		}
	}
	replyTopic, statusTopic := topics.Replies(robot), topics.Status(robot)
	tok := client.SubscribeMultiple(map[string]byte{replyTopic: protocol.KindReplies.QoS(), statusTopic: protocol.KindStatus.QoS()},
		func(c mqtt.Client, m mqtt.Message) {
			switch m.Topic() {
			case replyTopic:
				onReply(c, m)
			case statusTopic:
				onStatus(c, m)
			}
		})
	if err := mqttkit.Wait(ctx, tok, mc.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", replyTopic, err)
	}

	// The reply subscription is acknowledged before the command leaves, so
	// a fast robot's reply cannot be missed.
	start := time.Now()
	if err := mqttkit.Wait(ctx, client.Publish(topics.Commands(robot), protocol.KindCommands.QoS(), false, payload), mc.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("publish %s: %w", topics.Commands(robot), err)
	}
	timer := time.NewTimer(opts.Timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, fmt.Errorf("%w from %s to %s %s within %s; %s", errNoReply, robot, name, ev.ID, opts.Timeout, statusHint(status.Load()))
	case r := <-replies:
		res := &callResult{Command: ev, Reply: r, Data: r.Data.(protocol.CommandReply), RTT: time.Since(start)}
		if !res.Data.OK {
			if res.Data.Error == nil { // Decode guarantees an error when ok is false
				return res, errCommandFailed
			}
			return res, fmt.Errorf("%w: %s: %s", errCommandFailed, res.Data.Error.Code, res.Data.Error.Message)
		}
		return res, nil
	}
}

// callOnce runs one command on one robot over a connection of its own:
// the body of ping, sessions and session cancel. It decodes the result
// into result when that is not nil.
func callOnce(ctx context.Context, mc *mqttConfig, stderr io.Writer, robot, name string, args map[string]any, timeout time.Duration, result any) (*callResult, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("%w: --timeout must be positive, got %s", errUsage, timeout)
	}
	client, err := mc.open(ctx, stderr, name)
	if err != nil {
		return nil, err
	}
	defer client.Disconnect(250)
	res, err := call(ctx, client, mc, robot, name, args, callOpts{Timeout: timeout, Expires: timeout})
	if err != nil {
		return res, err
	}
	if result != nil {
		return res, resultAs(res, result)
	}
	return res, nil
}

// statusHint says what is known of a robot that did not answer.
func statusHint(s *protocol.Event) string {
	if s == nil {
		return "no status seen from it"
	}
	d, ok := s.Data.(protocol.RobotStatus)
	if !ok {
		return "no status seen from it"
	}
	hint := "its last status is " + d.State
	if d.Reason != "" {
		hint += " (" + d.Reason + ")"
	}
	return hint + " at " + s.TS.String()
}

// resultAs decodes a reply's free-form result into a typed result.
func resultAs(r *callResult, into any) error {
	b, err := json.Marshal(r.Data.Result)
	if err != nil {
		return fmt.Errorf("reply result: %w", err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		return fmt.Errorf("reply result: %w", err)
	}
	return nil
}
