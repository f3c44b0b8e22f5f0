package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "send",
		args:    "ROBOT NAME",
		summary: "send any command to a robot and print its reply",
		help: fmt.Sprintf("Publishes a command envelope on the robot's commands topic, waits for the\n"+
			"matching command.reply and prints it (the envelope, as JSON, with or without\n"+
			"--json). Exits 1 when the reply has ok=false.\nCommands: %s, %s, %s, %s.",
			protocol.CmdStartSession, protocol.CmdCancelSession, protocol.CmdListSessions, protocol.CmdPing),
		define: defineSend,
	})
}

func defineSend(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	argsJSON := fs.String("args", "{}", "the command's args, a JSON object")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	expires := fs.Duration("expires", -1, "the robot refuses the command after this long (default: the --timeout; 0: never)")
	fs.Bool("json", true, "print the reply envelope as JSON (always on: the reply is JSON)")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
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
		if name == "" {
			return fmt.Errorf("%w: data.name: the command name is empty", errUsage)
		}
		if *expires < 0 {
			*expires = *timeout
		}
		client, err := mc.open(ctx, stderr, "send")
		if err != nil {
			return err
		}
		defer client.Disconnect(250)
		res, err := call(ctx, client, mc, robot, name, cmdArgs, callOpts{Timeout: *timeout, Expires: *expires})
		if res != nil {
			if perr := writeJSON(stdout, res.Reply); perr != nil {
				return perr
			}
		}
		return err
	}
}
