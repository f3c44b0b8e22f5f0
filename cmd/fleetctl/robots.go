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

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "robots",
		args:    "[ROBOT...]",
		summary: "list robots: state, since, version, CPU, memory, running session",
		help: "Reads the retained status, metrics and session states of every robot (or\n" +
			"of the ROBOTs named) and prints one row per robot. It reads until the broker\n" +
			"has sent no retained message for --quiet (they all come at once after the\n" +
			"subscription), at most --wait. Exits 1 when no robot is found.",
		define: defineRobots,
	})
}

// robotsOut is `robots --json`.
type robotsOut struct {
	Broker  string     `json:"broker"`
	Robots  []robotRow `json:"robots"`
	Dropped int64      `json:"dropped"` // messages over the collection buffer's cap
}

// robotRow is one robot in `robots --json`. Fields the robot has not
// published are null.
type robotRow struct {
	Robot         string         `json:"robot"`
	State         string         `json:"state"`            // online, offline, or unknown (metrics but no status)
	Reason        string         `json:"reason,omitempty"` // offline only: shutdown or lost
	Since         *protocol.Time `json:"since"`            // the status's ts: when the robot came online or went offline
	AgentVersion  string         `json:"agent_version"`
	Hostname      string         `json:"hostname"`
	CPUPercent    *float64       `json:"cpu_percent"`
	MemoryPercent *float64       `json:"memory_percent"`
	MetricsAt     *protocol.Time `json:"metrics_at"`
	Sessions      []sessionBrief `json:"sessions"` // queued and running, by creation time
}

// sessionBrief is a session whose retained state is queued or running.
type sessionBrief struct {
	SessionID string   `json:"session_id"`
	Status    string   `json:"status"`
	Pipeline  string   `json:"pipeline"`
	Model     string   `json:"model"`
	Percent   float64  `json:"percent"`
	Stage     string   `json:"stage"`
	EtaS      *float64 `json:"eta_s"`
	createdAt time.Time
}

func defineRobots(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	wait := fs.Duration("wait", 10*time.Second, "the longest to collect retained messages")
	quiet := fs.Duration("quiet", 500*time.Millisecond, "stop collecting after this long without a retained message")
	asJSON := fs.Bool("json", false, "print the robots as JSON")
	ids := fs.Bool("ids", false, "print only the robot ids, one per line (scripts, shell completion)")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		if *ids && *asJSON {
			return fmt.Errorf("%w: --ids and --json exclude each other", errUsage)
		}
		for _, r := range pos {
			if err := protocol.CheckID("robot id", r); err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
		}
		if *wait <= 0 || *quiet <= 0 {
			return fmt.Errorf("%w: --wait and --quiet must be positive, got %s and %s", errUsage, *wait, *quiet)
		}
		client, err := mc.open(ctx, stderr, "robots")
		if err != nil {
			return err
		}
		defer client.Disconnect(250)
		out, err := collectRobots(ctx, client, mc, pos, *wait, *quiet)
		if err != nil {
			return err
		}
		if len(out.Robots) == 0 {
			return fmt.Errorf("%w on %s under prefix %q", errNoRobots, out.Broker, mc.Topics.Prefix())
		}
		switch {
		case *asJSON:
			return writeJSON(stdout, out)
		case *ids:
			for _, r := range out.Robots {
				fmt.Fprintln(stdout, r.Robot) // ids are checked: the topic and envelope agree on a valid one
			}
			return nil
		}
		printRobots(stdout, out, time.Now())
		return nil
	}
}

// collectRobots reads the retained state of the fleet (or of only).
func collectRobots(ctx context.Context, client mqtt.Client, mc *mqttConfig, only []string, wait, quiet time.Duration) (*robotsOut, error) {
	tp := mc.Topics
	filters := map[string]byte{}
	robots := only
	if len(robots) == 0 {
		robots = []string{"+"}
	}
	for _, r := range robots {
		filters[tp.Status(r)] = protocol.KindStatus.QoS()
		filters[tp.Metrics(r)] = protocol.KindMetrics.QoS()
		filters[tp.SessionState(r, "+")] = protocol.KindSessionState.QoS()
	}
	rows := map[string]*robotRow{}
	row := func(id string) *robotRow {
		if rows[id] == nil {
			rows[id] = &robotRow{Robot: id, State: "unknown", Sessions: []sessionBrief{}}
		}
		return rows[id]
	}
	dropped, err := collectRetained(ctx, client, mc, filters, wait, quiet, func(m mqtt.Message) bool {
		ev, err := protocol.Decode(m.Payload())
		if err != nil {
			return false // doctor and watch name bad payloads; a table has no room
		}
		if tpc, err := tp.Parse(m.Topic()); err != nil || tpc.Matches(ev) != nil {
			return false
		}
		r := row(ev.Robot)
		switch d := ev.Data.(type) {
		case protocol.RobotStatus:
			r.State, r.Reason, r.AgentVersion, r.Hostname = d.State, d.Reason, d.AgentVersion, d.Hostname
			r.Since = &ev.TS
		case protocol.RobotMetrics:
			cpu, mem := d.CPU.Percent, d.Memory.Percent
			r.CPUPercent, r.MemoryPercent, r.MetricsAt = &cpu, &mem, &ev.TS
		case protocol.SessionState:
			r.Sessions = setSession(r.Sessions, ev.Session, d)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	out := &robotsOut{Broker: mc.broker(), Robots: []robotRow{}, Dropped: dropped}
	for _, r := range rows {
		sort.SliceStable(r.Sessions, func(i, j int) bool { return r.Sessions[i].createdAt.Before(r.Sessions[j].createdAt) })
		out.Robots = append(out.Robots, *r)
	}
	sort.Slice(out.Robots, func(i, j int) bool { return out.Robots[i].Robot < out.Robots[j].Robot })
	return out, nil
}

// setSession records session id's latest state: kept while queued or
// running, removed once finished.
func setSession(list []sessionBrief, id string, d protocol.SessionState) []sessionBrief {
	for i := range list {
		if list[i].SessionID == id {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if d.Finished() {
		return list
	}
	return append(list, sessionBrief{SessionID: id, Status: d.Status, Pipeline: d.Pipeline, Model: d.Model,
		Percent: d.Percent, Stage: d.Stage, EtaS: d.EtaS, createdAt: d.CreatedAt.Time})
}

func printRobots(w io.Writer, out *robotsOut, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROBOT\tSTATE\tSINCE\tVERSION\tCPU\tMEM\tSESSION")
	for _, r := range out.Robots {
		state := r.State
		if r.Reason != "" {
			state += " (" + r.Reason + ")"
		}
		since := "-"
		if r.Since != nil {
			since = ago(now.Sub(r.Since.Time))
		}
		session := "-"
		if len(r.Sessions) > 0 {
			s := r.Sessions[0]
			session = fmt.Sprintf("%s %s %s %.0f%% %s", s.SessionID, s.Status, s.Pipeline, s.Percent, s.Stage)
			if len(r.Sessions) > 1 {
				session += fmt.Sprintf(" (+%d more)", len(r.Sessions)-1)
			}
		}
		cells := []string{r.Robot, state, since, orDash(r.AgentVersion), percent(r.CPUPercent), percent(r.MemoryPercent), strings.TrimSpace(session)}
		for i := range cells {
			cells[i] = clean(cells[i])
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	_ = tw.Flush()
	if out.Dropped > 0 {
		fmt.Fprintf(w, "WARN: dropped %d messages over the collection buffer's cap; the table may miss robots\n", out.Dropped)
	}
}

func percent(p *float64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", *p)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago renders a duration for a table: 45s, 12m, 3h05m, 2d04h.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
