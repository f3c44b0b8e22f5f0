package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// watchRun is one `fleetctl watch` running in the test.
type watchRun struct {
	stdout, stderr *syncBuffer
	finished       chan struct{} // closed when watch returned
	err            error         // watch's result, set before finished is closed
}

// startWatch runs `fleetctl watch args...` until it returns (--count) or the
// test ends, and waits until its subscription is acknowledged.
func startWatch(t *testing.T, args ...string) *watchRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, finished: make(chan struct{})}
	go func() {
		defer close(w.finished)
		w.err = runCommand(ctx, commands["watch"], args, w.stdout, w.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.finished:
		case <-time.After(5 * time.Second):
			t.Error("watch did not stop on cancel")
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(w.stderr.String(), "fleetctl watch: watching ") },
		5*time.Second, 10*time.Millisecond, "watch never subscribed: %s", w.stderr)
	return w
}

// wait waits for watch to exit on its own (--count).
func (w *watchRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-w.finished:
		return w.err
	case <-time.After(10 * time.Second):
		t.Fatalf("watch did not exit after --count messages; output:\n%s", w.stdout)
		return nil
	}
}

func TestWatchRobot(t *testing.T) {
	broker := brokertest.StartMochi(t)
	tp := protocol.Topics{}
	pub := dial(t, broker.URL(), "robot-r-1")

	status := protocol.Catalog()[0].Example()
	status.Robot = "r-1"
	publish(t, pub, tp.Status("r-1"), encode(t, status, 1), true) // retained before watch starts

	w := startWatch(t, "--broker", broker.URL(), "r-1", "--count", "5")
	progress := protocol.NewSessionEvent("r-1", "s-1", protocol.SessionProgress{Percent: 42.5, Stage: "quantize", Message: "layer 12/28", ElapsedS: 31.2})
	other := protocol.NewSessionEvent("r-2", "s-2", protocol.SessionProgress{Percent: 1, Stage: "load"})
	alert := protocol.NewEvent("r-9", protocol.RobotAlert{Alert: "disk_full", Severity: "critical", State: "firing", Message: "/ 99%", Value: 99, Threshold: 95})
	reply := protocol.NewEvent("r-1", protocol.CommandReply{CommandID: "c1", OK: false, Error: &protocol.CommandError{Code: protocol.CodeBusy, Message: "2 sessions running"}})
	publish(t, pub, tp.SessionEvents("r-2", "s-2"), encode(t, other, 1), false) // another robot: not shown
	publish(t, pub, tp.SessionEvents("r-1", "s-1"), encode(t, progress, 2), false)
	publish(t, pub, tp.Alerts("r-1"), []byte(`{"v":1,"type":"robot.alert"}`), false)
	publish(t, pub, tp.Alerts("r-1"), encode(t, alert, 3), false) // r-9 speaking on r-1's topic
	publish(t, pub, tp.Replies("r-1"), encode(t, reply, 4), false)
	require.NoError(t, w.wait(t))

	out := lines(w.stdout.String())
	require.Len(t, out, 5, w.stdout.String())
	require.Regexp(t, `^\d\d:\d\d:\d\d\.\d{3} fleet/v1/robots/r-1/status \(retained\) robot.status online agent 1.0.0 linux/arm64`, out[0])
	require.Contains(t, out[1], "fleet/v1/robots/r-1/sessions/s-1/events session.progress 42.5% quantize \"layer 12/28\" elapsed 31.2s eta unknown")
	require.Contains(t, out[1], progress.TS.UTC().Format("15:04:05.000"))
	require.Contains(t, out[2], "fleet/v1/robots/r-1/alerts INVALID id: is required")
	require.Contains(t, out[3], `robot.alert critical firing disk_full: "/ 99%"`)
	require.Contains(t, out[3], `WRONG TOPIC: invalid topic: envelope robot "r-9" differs from topic robot "r-1"`)
	require.Contains(t, out[4], `command.reply error for c1: busy: "2 sessions running"`)
	require.NotContains(t, w.stdout.String(), "r-2")
}

func TestWatchAllJSONFromEnv(t *testing.T) {
	broker := brokertest.StartMochi(t)
	t.Setenv("FLEETCTL_BROKER", broker.URL())
	t.Setenv("FLEETCTL_TOPIC_PREFIX", "acme/prod")
	tp := protocol.MustTopics("acme/prod")
	pub := dial(t, broker.URL(), "robots")

	w := startWatch(t, "--json", "--count", "2")
	a := encode(t, protocol.NewSessionEvent("r-1", "s-1", protocol.SessionProgress{Percent: 5, Stage: "load"}), 1)
	b := encode(t, protocol.NewEvent("r-2", protocol.RobotNotification{Level: "info", Title: "hello"}), 1)
	publish(t, pub, "fleet/v1/robots/r-1/status", []byte(`{"not":"under our prefix"}`), false)
	publish(t, pub, tp.SessionEvents("r-1", "s-1"), a, false)
	publish(t, pub, tp.Notifications("r-2"), b, false)
	require.NoError(t, w.wait(t))
	require.Equal(t, []string{string(a), string(b)}, lines(w.stdout.String()))
}

// TestWatchMosquitto: the same against a real Mosquitto, through its
// WebSocket listener as a browser-side tool would connect.
func TestWatchMosquitto(t *testing.T) {
	broker := brokertest.StartMosquitto(t, brokertest.Options{WebSockets: true})
	pub := dial(t, broker.URL(), "robot")
	w := startWatch(t, "--broker", fmt.Sprintf("ws://127.0.0.1:%d/mqtt", broker.WSPort), "--count", "1")
	ev := protocol.NewSessionEvent("r-1", "s-1", protocol.SessionState{Status: protocol.StatusRunning, Pipeline: "quantize-int8", Model: "m.onnx", Percent: 10, Stage: "load", CreatedAt: protocol.Now()})
	publish(t, pub, protocol.Topics{}.SessionState("r-1", "s-1"), encode(t, ev, 1), true)
	require.NoError(t, w.wait(t))
	require.Contains(t, w.stdout.String(), "session.state running quantize-int8 m.onnx 10.0% load")
}

func TestWatchErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"watch", "a", "b"}, 2, "at most one ROBOT"},
		{[]string{"watch", "r/1"}, 2, "robot id \"r/1\" must match"},
		{[]string{"watch", "--prefix", "a/+/b"}, 2, "--prefix"},
		{[]string{"watch", "--broker", "tcp://127.0.0.1:1", "--connect-timeout", "500ms"}, 1, "connect to tcp://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runFleetctl(t, tt.args...)
			require.Equal(t, tt.code, code, errOut)
			require.Contains(t, errOut, tt.want)
		})
	}
}

func TestWatchLineSummaries(t *testing.T) {
	// Every type's example has a non-empty summary and no WRONG TOPIC on its own topic.
	tp := protocol.Topics{}
	for _, info := range protocol.Catalog() {
		ev := info.Example()
		b, err := protocol.Encode(ev)
		require.NoError(t, err)
		topic, err := tp.For(ev)
		if info.Type == protocol.TypeSystemStatus {
			topic = "fleet/v1/robots/relay/status"
		} else {
			require.NoError(t, err)
		}
		line := watchLine(tp, topic, b, false, time.Now())
		require.Contains(t, line, "21:30:00.123 "+topic+" "+info.Type+" ")
		require.NotEmpty(t, summary(ev), info.Type)
		if info.Type != protocol.TypeSystemStatus {
			require.NotContains(t, line, "WRONG TOPIC")
		}
	}
}

// TestWatchSurvivesBrokerRestart: watch reconnects and subscribes again
// after the broker restarts, and keeps printing.
func TestWatchSurvivesBrokerRestart(t *testing.T) {
	broker := brokertest.StartMosquitto(t)
	w := startWatch(t, "--broker", broker.URL(), "--count", "2", "r-1")
	tp := protocol.Topics{}
	first := dial(t, broker.URL(), "robot-before")
	publish(t, first, tp.Notifications("r-1"), encode(t, protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "before"}), 1), false)
	require.Eventually(t, func() bool { return strings.Contains(w.stdout.String(), `"before"`) }, 5*time.Second, 10*time.Millisecond)

	broker.Stop()
	broker.Start()
	require.Eventually(t, func() bool { return strings.Count(w.stderr.String(), "fleetctl watch: watching ") == 2 },
		20*time.Second, 50*time.Millisecond, "no resubscription: %s", w.stderr)
	require.Contains(t, w.stderr.String(), "connection lost")
	second := dial(t, broker.URL(), "robot-after")
	publish(t, second, tp.Notifications("r-1"), encode(t, protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "after"}), 2), false)
	require.NoError(t, w.wait(t))
	require.Contains(t, w.stdout.String(), `"after"`)
}

func TestRecentIDsShowsARedeliveryOnce(t *testing.T) {
	r := newRecentIDs(2)
	a, b, c := []byte(`{"id":"a"}`), []byte(`{"id":"b"}`), []byte(`{"id":"c"}`)
	require.False(t, r.seen(a))
	require.True(t, r.seen(a), "the same event id again is a redelivery")
	require.False(t, r.seen([]byte(`not json`)))
	require.False(t, r.seen([]byte(`not json`)), "payloads without an id are never duplicates")
	require.False(t, r.seen(b))
	require.False(t, r.seen(c)) // a falls out of the window of 2
	require.False(t, r.seen(a))
}
