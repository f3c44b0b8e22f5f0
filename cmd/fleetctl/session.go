package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "session start",
		args:    "ROBOT",
		summary: "start an optimization session on a robot; --follow shows its progress to the end",
		help: "Sends start_session with --pipeline, --model and the --param values and\n" +
			"prints the new session's id. A --param value is JSON when it parses as JSON\n" +
			"(5, 0.5, true, \"5\") and a string otherwise (int8).\n\n" +
			"With --follow it then shows a progress bar with stage and ETA on standard\n" +
			"error until the session ends, prints the outcome, and exits 0 only when the\n" +
			"session completed: 3 when it failed, 4 when it was cancelled, 5 when it timed\n" +
			"out on the robot. Interrupting fleetctl leaves the session running.",
		define: defineSessionStart,
	})
	register(&command{
		name:    "session follow",
		args:    "ROBOT SESSION",
		summary: "follow a running session (started anywhere) to its end",
		help: "Shows the session's progress like session start --follow, for a session\n" +
			"started from the dashboard or another terminal, and exits the same way: 0 only\n" +
			"when it completed, 3 failed, 4 cancelled, 5 timed out. A finished session's\n" +
			"outcome is printed at once. Exits 1 when nothing of the session is heard\n" +
			"within --timeout.",
		define: defineSessionFollow,
	})
	register(&command{
		name:    "session cancel",
		args:    "ROBOT SESSION",
		summary: "cancel a robot's queued or running session",
		help:    "Sends cancel_session and prints the session's status after it.",
		define:  defineSessionCancel,
	})
}

// sessionOut is `session start --json` and `session cancel --json`. State
// is the session's final session.state data, with --follow only.
type sessionOut struct {
	Robot     string                 `json:"robot"`
	SessionID string                 `json:"session_id"`
	Status    string                 `json:"status"`
	State     *protocol.SessionState `json:"state,omitempty"`
}

// paramFlags collects repeated --param k=v.
type paramFlags map[string]any

func (p paramFlags) String() string { return "" }

func (p paramFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	if _, dup := p[k]; dup {
		return fmt.Errorf("%q given twice", k)
	}
	var j any
	if err := json.Unmarshal([]byte(v), &j); err == nil {
		p[k] = j
	} else {
		p[k] = v
	}
	return nil
}

func defineSessionStart(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	pipeline := fs.String("pipeline", "", "pipeline name, as configured on the robot (required)")
	model := fs.String("model", "", "model file name inside the robot's model directories (required)")
	params := paramFlags{}
	fs.Var(params, "param", "a pipeline parameter NAME=VALUE; repeat for several")
	sessionID := fs.String("session-id", "", "the new session's id (default: a new ULID)")
	follow := fs.Bool("follow", false, "show progress until the session ends; the exit status says how it ended")
	followTimeout := fs.Duration("follow-timeout", 0, "with --follow, give up waiting after this long (exit 1; 0: wait as long as it runs)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the robot to accept the command")
	asJSON := fs.Bool("json", false, "print the result as JSON (progress stays on standard error)")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		robot, err := oneRobot(pos)
		if err != nil {
			return err
		}
		switch {
		case *pipeline == "":
			return fmt.Errorf("%w: --pipeline is required", errUsage)
		case *model == "":
			return fmt.Errorf("%w: --model is required", errUsage)
		case *timeout <= 0:
			return fmt.Errorf("%w: --timeout must be positive, got %s", errUsage, *timeout)
		case *followTimeout < 0:
			return fmt.Errorf("%w: --follow-timeout must not be negative, got %s", errUsage, *followTimeout)
		}
		if *sessionID == "" {
			*sessionID = protocol.NewID()
		} else if err := protocol.CheckID("session id", *sessionID); err != nil {
			return fmt.Errorf("%w: --session-id: %v", errUsage, err)
		}
		if err := mc.load(stderr); err != nil {
			return err
		}
		args := map[string]any{"pipeline": *pipeline, "model": *model, "session_id": *sessionID}
		if len(params) > 0 {
			args["params"] = map[string]any(params)
		}
		start := func(ctx context.Context, client mqtt.Client) (string, error) {
			res, err := call(ctx, client, mc, robot, protocol.CmdStartSession, args, callOpts{Timeout: *timeout, Expires: *timeout})
			if err != nil {
				return "", err
			}
			var sr protocol.StartSessionResult
			if err := resultAs(res, &sr); err != nil {
				return "", err
			}
			return sr.Status, nil
		}
		if !*follow {
			client, err := mc.connect(ctx, "start", false, nil, nil)
			if err != nil {
				return err
			}
			defer client.Disconnect(250)
			status, err := start(ctx, client)
			if err != nil {
				return err
			}
			out := sessionOut{Robot: robot, SessionID: *sessionID, Status: status}
			if *asJSON {
				return writeJSON(stdout, out)
			}
			fmt.Fprintln(stdout, cleanf("session %s on %s: %s", *sessionID, robot, status))
			return nil
		}
		f := &follower{mc: mc, robot: robot, session: *sessionID, bar: newProgressBar(stderr)}
		return followAndReport(ctx, f, start, *followTimeout, *asJSON, stdout)
	}
}

// followAndReport follows a session to its end (at most followTimeout when
// positive), prints the outcome and returns the error its status maps to.
func followAndReport(ctx context.Context, f *follower, start func(context.Context, mqtt.Client) (string, error), followTimeout time.Duration, asJSON bool, stdout io.Writer) error {
	if followTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, followTimeout, errFollowTimeout)
		defer cancel()
	}
	st, err := f.run(ctx, start)
	if err != nil {
		if context.Cause(ctx) == errFollowTimeout {
			return fmt.Errorf("%w after --follow-timeout %s: %s on %s", errFollowTimeout, followTimeout, f.session, f.robot)
		}
		return err
	}
	if asJSON {
		if err := writeJSON(stdout, sessionOut{Robot: f.robot, SessionID: f.session, Status: st.Status, State: st}); err != nil {
			return err
		}
	} else {
		printOutcome(stdout, f.robot, f.session, st)
	}
	return outcomeErr(f.robot, f.session, st)
}

func defineSessionFollow(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the first news of the session")
	followTimeout := fs.Duration("follow-timeout", 0, "give up waiting after this long (exit 1; 0: wait as long as it runs)")
	asJSON := fs.Bool("json", false, "print the outcome as JSON (progress stays on standard error)")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		robot, session, err := robotAndSession(pos)
		if err != nil {
			return err
		}
		if *timeout <= 0 || *followTimeout < 0 {
			return fmt.Errorf("%w: --timeout must be positive and --follow-timeout not negative", errUsage)
		}
		if err := mc.load(stderr); err != nil {
			return err
		}
		f := &follower{mc: mc, robot: robot, session: session, bar: newProgressBar(stderr), attachWait: *timeout}
		return followAndReport(ctx, f, nil, *followTimeout, *asJSON, stdout)
	}
}

// robotAndSession checks that pos is a valid robot id and session id.
func robotAndSession(pos []string) (string, string, error) {
	if len(pos) != 2 {
		return "", "", fmt.Errorf("%w: want ROBOT SESSION, got %q", errUsage, pos)
	}
	if err := protocol.CheckID("robot id", pos[0]); err != nil {
		return "", "", fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := protocol.CheckID("session id", pos[1]); err != nil {
		return "", "", fmt.Errorf("%w: %v", errUsage, err)
	}
	return pos[0], pos[1], nil
}

// outcomeErr maps a finished session to fleetctl's exit status.
func outcomeErr(robot, session string, st *protocol.SessionState) error {
	switch st.Status {
	case protocol.StatusCompleted:
		return nil
	case protocol.StatusCancelled:
		return fmt.Errorf("%w: %s on %s", errSessionCancelled, session, robot)
	}
	why := ""
	if st.Error != nil {
		why = ": " + st.Error.Code + ": " + st.Error.Message
		if st.Error.Code == protocol.FailTimeout {
			return fmt.Errorf("%w: %s on %s%s", errSessionTimeout, session, robot, why)
		}
	}
	return fmt.Errorf("%w: %s on %s%s", errSessionFailed, session, robot, why)
}

// printOutcome describes a finished session for people.
func printOutcome(w io.Writer, robot, session string, st *protocol.SessionState) {
	took := ""
	if st.StartedAt != nil && st.FinishedAt != nil {
		took = " in " + st.FinishedAt.Sub(st.StartedAt.Time).Round(10*time.Millisecond).String()
	}
	fmt.Fprintln(w, cleanf("session %s on %s %s%s (%s %s)", session, robot, st.Status, took, st.Pipeline, st.Model))
	if st.Result != nil {
		for _, a := range st.Result.Artifacts {
			fmt.Fprintln(w, cleanf("  artifact %s %d bytes sha256 %s", a.Path, a.Bytes, a.SHA256))
		}
		for _, k := range sortedKeys(st.Result.Metrics) {
			fmt.Fprintln(w, cleanf("  %s %g", k, st.Result.Metrics[k]))
		}
	}
	if st.Error != nil {
		fmt.Fprintln(w, cleanf("  error %s: %s", st.Error.Code, st.Error.Message))
		if d := strings.TrimSpace(st.Error.Detail); d != "" {
			for _, line := range lastLines(d, 10) {
				fmt.Fprintln(w, "  | "+clean(line))
			}
		}
	}
}

// lastLines returns at most n of s's last lines.
func lastLines(s string, n int) []string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return ls
}

func defineSessionCancel(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	reason := fs.String("reason", "cancelled with fleetctl", "why, recorded in session.cancelled")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		robot, session, err := robotAndSession(pos)
		if err != nil {
			return err
		}
		args := map[string]any{"session_id": session, "reason": *reason, "by": whoAmI()}
		var cr protocol.CancelSessionResult
		if _, err := callOnce(ctx, mc, stderr, robot, protocol.CmdCancelSession, args, *timeout, &cr); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, sessionOut{Robot: robot, SessionID: session, Status: cr.Status})
		}
		fmt.Fprintln(stdout, cleanf("session %s on %s: %s", session, robot, cr.Status))
		return nil
	}
}

// whoAmI names the canceller for session.cancelled's by: fleetctl and the
// local user.
func whoAmI() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		return "fleetctl"
	}
	return "fleetctl:" + name
}
