package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register("send", command{summary: "send a command to a robot and print its reply", run: runSend})
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetctl send [flags] ROBOT NAME\n\nPublishes a command envelope on the robot's commands topic, waits for the\nmatching command.reply and prints it. Exits 1 when the reply has ok=false.\nCommands: %s, %s, %s, %s.\n\nFlags:\n",
			protocol.CmdStartSession, protocol.CmdCancelSession, protocol.CmdListSessions, protocol.CmdPing)
		fs.PrintDefaults()
	}
	mc := addMQTTFlags(fs)
	argsJSON := fs.String("args", "{}", "the command's args, a JSON object")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	expires := fs.Duration("expires", -1, "the robot refuses the command after this long (default: the --timeout; 0: never)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want ROBOT NAME, got %q", errUsage, pos)
	}
	robot, name := pos[0], pos[1]
	if err := protocol.CheckID("robot id", robot); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var cmdArgs map[string]any
	if err := json.Unmarshal([]byte(*argsJSON), &cmdArgs); err != nil || cmdArgs == nil {
		return fmt.Errorf("%w: --args must be a JSON object: %q", errUsage, *argsJSON)
	}
	if *timeout <= 0 {
		return fmt.Errorf("%w: --timeout must be positive, got %s", errUsage, *timeout)
	}
	topics, err := mc.topics()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	cmd := protocol.Command{Name: name, Args: cmdArgs}
	if *expires < 0 {
		*expires = *timeout
	}
	if *expires > 0 {
		cmd.ExpiresAt = protocol.TimePtr(time.Now().Add(*expires))
	}
	ev := protocol.NewEvent(robot, cmd)
	payload, err := protocol.Encode(ev)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	replies := make(chan *protocol.Event, 1)
	var status atomic.Pointer[protocol.Event] // the robot's latest status, for the timeout message
	client, err := mc.connect(ctx, "send", false, nil, nil)
	if err != nil {
		return err
	}
	defer client.Disconnect(250)
	onReply := func(_ mqtt.Client, m mqtt.Message) {
		r, err := protocol.Decode(m.Payload())
		if err != nil {
			fmt.Fprintf(stderr, "fleetctl send: ignoring invalid reply on %s: %v\n", m.Topic(), err)
			return
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
	subs := map[string]byte{topics.Replies(robot): 1, topics.Status(robot): 1}
	handlers := map[string]mqtt.MessageHandler{topics.Replies(robot): onReply, topics.Status(robot): onStatus}
	tok := client.SubscribeMultiple(subs, func(c mqtt.Client, m mqtt.Message) {
		if h, ok := handlers[m.Topic()]; ok {
			h(c, m)
		}
	})
	if err := waitToken(ctx, tok, mc.ConnectTimeout); err != nil {
		return fmt.Errorf("subscribe %s: %w", topics.Replies(robot), err)
	}
	// The reply subscription is acknowledged before the command leaves, so a
	// fast robot's reply cannot be missed.
	if err := waitToken(ctx, client.Publish(topics.Commands(robot), 1, false, payload), mc.ConnectTimeout); err != nil {
		return fmt.Errorf("publish %s: %w", topics.Commands(robot), err)
	}

	timer := time.NewTimer(*timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		hint := "no status seen from it"
		if s := status.Load(); s != nil {
			if d, ok := s.Data.(protocol.RobotStatus); ok {
				hint = "its last status is " + d.State
				if d.Reason != "" {
					hint += " (" + d.Reason + ")"
				}
				hint += " at " + s.TS.String()
			}
		}
		return fmt.Errorf("%w from %s to %s %s within %s; %s", errNoReply, robot, name, ev.ID, *timeout, hint)
	case r := <-replies:
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("print reply: %w", err)
		}
		fmt.Fprintf(stdout, "%s\n", b)
		d := r.Data.(protocol.CommandReply)
		if !d.OK {
			if d.Error == nil { // Decode guarantees an error when ok is false
				return errCommandFailed
			}
			return fmt.Errorf("%w: %s: %s", errCommandFailed, d.Error.Code, d.Error.Message)
		}
		return nil
	}
}
