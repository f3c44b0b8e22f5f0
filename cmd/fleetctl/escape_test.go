package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// hostile is robot-supplied text that, printed raw, clears the screen,
// homes the cursor, starts a fake line, uses an 8-bit CSI, retitles the
// window and flips the text direction.
const hostile = "disk\x1b[2J\x1b[H\r\n12:00:00.000 fleet/v1/robots/r-1/status robot.status online\u009b31m\x1b]0;pwned\x07\u202eevil\x7f"

// requireTerminalSafe fails when s holds anything a terminal would act on
// besides the newlines that end lines.
func requireTerminalSafe(t *testing.T, s string) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		for _, r := range line {
			require.False(t, unsafeRune(r), "unsafe rune %U in line %q", r, line)
		}
	}
}

func TestClean(t *testing.T) {
	require.Equal(t, "plain text, ünïcode, 温度 ok", clean("plain text, ünïcode, 温度 ok"))
	require.Equal(t, `a\x1b[2Jb\r\nc\u009b\u202e\x7f\a\tz\xff`, clean("a\x1b[2Jb\r\nc\u009b\u202e\x7f\x07\tz\xff"))
	requireTerminalSafe(t, clean(hostile))

	// safeJSON keeps the meaning: the same value decodes back.
	b, err := json.Marshal(map[string]string{"alert": hostile})
	require.NoError(t, err)
	safe := safeJSON(b)
	requireTerminalSafe(t, string(safe))
	var back map[string]string
	require.NoError(t, json.Unmarshal(safe, &back))
	require.Equal(t, hostile, back["alert"])
	require.Equal(t, `{"a":"\ufffd"}`, string(safeJSON([]byte("{\"a\":\"\xff\"}"))))
}

// TestWatchEscapesRobotText is the attack of issue 9 item 17: a robot
// (or whoever holds its credentials) publishes an alert whose name and
// message carry terminal escape codes and a fake line. watch prints it
// escaped, on one line, in text and in --json mode; an invalid payload
// too, and a hostile topic level (which mochi does not route, so it is
// checked on watchLine directly).
func TestWatchEscapesRobotText(t *testing.T) {
	broker := brokertest.StartMochi(t)
	pub := dial(t, broker.URL(), "robot-r-1")
	tp := protocol.Topics{}
	alert := encode(t, protocol.NewEvent("r-1", protocol.RobotAlert{Alert: hostile, Severity: "critical", State: "firing", Message: "msg " + hostile, Value: 1, Threshold: 0}), 1)
	note := encode(t, protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: hostile, Message: hostile}), 2)
	progress := encode(t, protocol.NewSessionEvent("r-1", "s-1", protocol.SessionProgress{Percent: 5, Stage: hostile, Message: hostile}), 3)
	invalid := []byte("\x1b[2J not json " + hostile)

	for _, mode := range []string{"text", "json"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"--broker", broker.URL(), "--count", "4", "r-1"}
			if mode == "json" {
				args = append(args, "--json")
			}
			w := startWatch(t, args...)
			publish(t, pub, tp.Alerts("r-1"), alert, false)
			publish(t, pub, tp.Notifications("r-1"), note, false)
			publish(t, pub, tp.SessionEvents("r-1", "s-1"), progress, false)
			publish(t, pub, tp.Alerts("r-1"), invalid, false)
			require.NoError(t, w.wait(t))
			out := w.stdout.String()
			requireTerminalSafe(t, out)
			require.Len(t, lines(out), 4, out)
			require.NotContains(t, out, "\x1b")
			if mode == "text" {
				require.Contains(t, out, `robot.alert critical firing disk\x1b[2J\x1b[H\r\n12:00:00.000`)
				require.Contains(t, out, `INVALID`)
				line := watchLine(tp, "fleet/v1/robots/r-1/\x1b[2J", alert, false, time.Now())
				requireTerminalSafe(t, line)
				require.Contains(t, line, `fleet/v1/robots/r-1/\x1b[2J`)
				return
			}
			ls := lines(out)
			for _, l := range ls[:3] {
				ev, err := protocol.Decode([]byte(l))
				require.NoError(t, err, "a --json line is still the event: %s", l)
				require.Equal(t, "r-1", ev.Robot)
			}
			ev, _ := protocol.Decode([]byte(ls[0]))
			require.Equal(t, hostile, ev.Data.(protocol.RobotAlert).Alert, "escaping must not change the JSON's meaning")
			require.Contains(t, ls[3], `\x1b[2J not json`)
		})
	}
}

// TestTablesEscapeRobotText: the robots and sessions tables, the progress
// bar and a session's outcome clean what the robot wrote.
func TestTablesEscapeRobotText(t *testing.T) {
	now := time.Now()
	cpu := 5.0
	var out syncBuffer
	printRobots(&out, &robotsOut{Robots: []robotRow{{Robot: "r-1", State: "online", AgentVersion: hostile, CPUPercent: &cpu,
		Sessions: []sessionBrief{{SessionID: "s-1", Status: "running", Pipeline: hostile, Stage: hostile}}}}}, now)
	printSessions(&out, []protocol.SessionSummary{{SessionID: "s-1", SessionState: protocol.SessionState{Status: "failed", Pipeline: hostile,
		Model: hostile, Stage: hostile, CreatedAt: protocol.T(now), Error: &protocol.ErrorInfo{Code: "runner_error", Message: hostile}}}}, now)
	bar := newProgressBar(&out)
	bar.update("running", 50, hostile, hostile, nil, 1)
	printOutcome(&out, "r-1", "s-1", &protocol.SessionState{Status: "failed", Pipeline: hostile, Model: hostile,
		Error: &protocol.ErrorInfo{Code: hostile, Message: hostile, Detail: hostile + "\n" + hostile}})
	s := out.String()
	requireTerminalSafe(t, s)
	require.Contains(t, s, `disk\x1b[2J`)
	// Two table rows with headers, one bar line, the outcome, its error and
	// the detail's four lines, each cleaned on its own.
	require.Equal(t, 2+2+1+1+1+4, len(lines(s)), s)
}

// TestProgressBarOnTerminal: on a terminal the bar is redrawn in place,
// notes go above it, and done ends its line.
func TestProgressBarOnTerminal(t *testing.T) {
	var out syncBuffer
	b := &progressBar{w: &out, tty: true, width: 10, maxMsg: 8}
	eta := 75.0
	b.update("running", 42, "quantize", "layer 12/28 of the model", &eta, 31)
	b.update("running", 50, "quantize", "layer 14/28", &eta, 32)
	b.note("robot went offline")
	b.update("running", 100, "write", "", nil, 40)
	b.done()
	require.Equal(t, "\r\x1b[K[####......]  42.0% running quantize: layer 1… elapsed 31s ETA 1m15s"+
		"\r\x1b[K[#####.....]  50.0% running quantize: layer 1… elapsed 32s ETA 1m15s"+
		"\r\x1b[Kfleetctl: robot went offline\n"+
		"\r\x1b[K[##########] 100.0% running write elapsed 40s\n", out.String())
}
