package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "sessions",
		args:    "ROBOT",
		summary: "list a robot's sessions (list_sessions)",
		help: "Asks the robot for its sessions (the list_sessions command) and prints one\n" +
			"row each, newest first: id, status, pipeline, model, progress, stage, age and\n" +
			"duration, and the error of failed ones.",
		define: defineSessions,
	})
}

// sessionsOut is `sessions --json`: the list_sessions result, each entry
// session.state data plus session_id (spec §4).
type sessionsOut struct {
	Robot    string                    `json:"robot"`
	Sessions []protocol.SessionSummary `json:"sessions"`
}

func defineSessions(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the reply")
	asJSON := fs.Bool("json", false, "print the sessions as JSON")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		robot, err := oneRobot(pos)
		if err != nil {
			return err
		}
		var list protocol.ListSessionsResult
		if _, err := callOnce(ctx, mc, stderr, robot, protocol.CmdListSessions, nil, *timeout, &list); err != nil {
			return err
		}
		out := sessionsOut{Robot: robot, Sessions: list.Sessions}
		if out.Sessions == nil {
			out.Sessions = []protocol.SessionSummary{}
		}
		sort.SliceStable(out.Sessions, func(i, j int) bool {
			return out.Sessions[i].CreatedAt.After(out.Sessions[j].CreatedAt.Time)
		})
		if *asJSON {
			return writeJSON(stdout, out)
		}
		printSessions(stdout, out.Sessions, time.Now())
		return nil
	}
}

func printSessions(w io.Writer, list []protocol.SessionSummary, now time.Time) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no sessions")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tSTATUS\tPIPELINE\tMODEL\tPROGRESS\tSTAGE\tCREATED\tDURATION\tERROR")
	for _, s := range list {
		duration := "-"
		if s.StartedAt != nil {
			end := now
			if s.FinishedAt != nil {
				end = s.FinishedAt.Time
			}
			duration = end.Sub(s.StartedAt.Time).Round(100 * time.Millisecond).String()
		}
		errText := "-"
		if s.Error != nil {
			errText = s.Error.Code + ": " + s.Error.Message
		}
		cells := []string{s.SessionID, s.Status, s.Pipeline, s.Model, fmt.Sprintf("%.0f%%", s.Percent), orDash(s.Stage),
			ago(now.Sub(s.CreatedAt.Time)) + " ago", duration, errText}
		for i := range cells {
			cells[i] = clean(cells[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
}
