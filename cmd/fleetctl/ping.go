package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "ping",
		args:    "ROBOT",
		summary: "ping a robot and time its reply",
		help: "Sends the ping command and prints the round trip, the agent's version and\n" +
			"uptime. Exits 1 when the robot does not answer within --timeout.",
		define: definePing,
	})
}

// pingOut is `ping --json`.
type pingOut struct {
	Robot        string  `json:"robot"`
	Broker       string  `json:"broker"`
	RTTMs        float64 `json:"rtt_ms"` // publish of the command to arrival of the reply
	AgentVersion string  `json:"agent_version"`
	UptimeS      float64 `json:"uptime_s"`
}

func definePing(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the reply")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		robot, err := oneRobot(pos)
		if err != nil {
			return err
		}
		var pr protocol.PingResult
		res, err := callOnce(ctx, mc, stderr, robot, protocol.CmdPing, nil, *timeout, &pr)
		if err != nil {
			return err
		}
		out := pingOut{Robot: robot, Broker: mc.broker(), RTTMs: float64(res.RTT.Microseconds()) / 1000, AgentVersion: pr.AgentVersion, UptimeS: pr.UptimeS}
		if *asJSON {
			return writeJSON(stdout, out)
		}
		fmt.Fprintln(stdout, cleanf("pong from %s in %.1f ms: agent %s, up %s", robot, out.RTTMs, pr.AgentVersion, ago(time.Duration(pr.UptimeS*float64(time.Second)))))
		return nil
	}
}

// oneRobot checks that pos is exactly one valid robot id.
func oneRobot(pos []string) (string, error) {
	if len(pos) != 1 {
		return "", fmt.Errorf("%w: want ROBOT, got %q", errUsage, pos)
	}
	if err := protocol.CheckID("robot id", pos[0]); err != nil {
		return "", fmt.Errorf("%w: %v", errUsage, err)
	}
	return pos[0], nil
}
