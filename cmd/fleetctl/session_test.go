package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// keysOf returns the sorted keys of a JSON object.
func keysOf(t *testing.T, raw any) []string {
	t.Helper()
	m, ok := raw.(map[string]any)
	require.True(t, ok, "not an object: %v", raw)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(s), &m), s)
	return m
}

// TestSessionFollowCompletes: a real agent runs the example optimizer;
// --follow shows progress with stage and ETA and exits 0 with the result.
func TestSessionFollowCompletes(t *testing.T) {
	broker := brokertest.StartMochi(t)
	startAgent(t, broker.URL(), "r-1")

	code, out, errOut := runFleetctl(t, "session", "start", "r-1", "--broker", broker.URL(), "--pipeline", "fake-optimize",
		"--model", "m.onnx", "--param", "steps=4", "--param", "step_delay=0.1", "--follow")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Regexp(t, `session \S+ on r-1 completed in \S+ \(fake-optimize m.onnx\)`, out)
	require.Contains(t, out, "size_after 11")
	require.Contains(t, out, "artifact m.optimized.onnx 11 bytes sha256 ")
	require.Regexp(t, `\[#+\.*\] +\d+\.\d% running \w+`, errOut, "a progress bar with stage")
	require.Contains(t, errOut, "ETA ")
	t.Logf("progress as a log shows it:\n%s", errOut)

	// --json: one object, the final session.state inside.
	code, out, errOut = runFleetctl(t, "session", "start", "r-1", "--broker", broker.URL(), "--pipeline", "fake-optimize",
		"--model", "m.onnx", "--param", "steps=2", "--follow", "--json", "--session-id", "s-json")
	require.Equal(t, 0, code, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, []string{"robot", "session_id", "state", "status"}, keysOf(t, m))
	require.Equal(t, "s-json", m["session_id"])
	require.Equal(t, "completed", m["status"])
	state := m["state"].(map[string]any)
	require.Equal(t, "completed", state["status"])
	require.NotNil(t, state["result"])

	// session follow of a finished session: its outcome at once, exit 0.
	code, out, errOut = runFleetctl(t, "session", "follow", "r-1", "s-json", "--broker", broker.URL())
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "session s-json on r-1 completed")
	// Of a session nobody has heard of: exit 1 after --timeout.
	code, _, errOut = runFleetctl(t, "session", "follow", "r-1", "s-nope", "--broker", broker.URL(), "--timeout", "500ms")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "unknown session: no state or event of session s-nope on r-1 within 500ms")
}

// TestSessionFollowFailures: a failing pipeline exits 3 with its error and
// stderr tail; one the robot times out exits 5.
func TestSessionFollowFailures(t *testing.T) {
	broker := brokertest.StartMosquitto(t)
	startAgent(t, broker.URL(), "r-2")

	code, out, errOut := runFleetctl(t, "session", "start", "r-2", "--broker", broker.URL(), "--pipeline", "fail", "--model", "m.onnx", "--follow")
	require.Equal(t, 3, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "failed")
	require.Contains(t, out, "error runner_error")
	require.Contains(t, out, "| last words")
	require.Contains(t, errOut, "session failed")

	code, out, errOut = runFleetctl(t, "session", "start", "r-2", "--broker", broker.URL(), "--pipeline", "slow", "--model", "m.onnx", "--follow", "--json")
	require.Equal(t, 5, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, "failed", m["status"])
	require.Equal(t, "timeout", m["state"].(map[string]any)["error"].(map[string]any)["code"])

	// A command the robot refuses: exit 1, its error, no session.
	code, _, errOut = runFleetctl(t, "session", "start", "r-2", "--broker", broker.URL(), "--pipeline", "nope", "--model", "m.onnx", "--follow")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "unknown_pipeline")
}

// TestSessionCancelAndLists: a long session shows in `sessions` and
// `robots`; `session cancel` ends it, and a --follow of it exits 4.
func TestSessionCancelAndLists(t *testing.T) {
	broker := brokertest.StartMochi(t)
	startAgent(t, broker.URL(), "r-3")
	b := broker.URL()

	code, out, errOut := runFleetctl(t, "session", "start", "r-3", "--broker", b, "--pipeline", "fake-optimize", "--model", "m.onnx",
		"--param", "steps=1000", "--param", "step_delay=0.1", "--session-id", "s-long", "--json")
	require.Equal(t, 0, code, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, []string{"robot", "session_id", "status"}, keysOf(t, m))
	require.Equal(t, "s-long", m["session_id"])

	// A second fleetctl follows it (its --session-id is taken: start fails),
	// so follow it the way an engineer would: start another and cancel that.
	type result struct {
		code        int
		out, errOut string
	}
	followed := make(chan result, 1)
	go func() {
		code, out, errOut := runFleetctl(t, "session", "start", "r-3", "--broker", b, "--pipeline", "fake-optimize", "--model", "m.onnx",
			"--param", "steps=1000", "--param", "step_delay=0.1", "--session-id", "s-follow", "--follow")
		followed <- result{code, out, errOut}
	}()

	require.Eventually(t, func() bool {
		code, out, _ := runFleetctl(t, "sessions", "r-3", "--broker", b)
		return code == 0 && strings.Contains(out, "s-long") && strings.Contains(out, "s-follow") && strings.Contains(out, "running")
	}, 30*time.Second, 200*time.Millisecond)
	code, out, errOut = runFleetctl(t, "sessions", "r-3", "--broker", b)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^SESSION +STATUS +PIPELINE +MODEL +PROGRESS +STAGE +CREATED +DURATION +ERROR$`, out)
	require.Regexp(t, `(?m)^s-long +running +fake-optimize +m.onnx +\d+% `, out)

	code, out, errOut = runFleetctl(t, "sessions", "r-3", "--broker", b, "--json")
	require.Equal(t, 0, code, errOut)
	m = decodeJSON(t, out)
	require.Equal(t, []string{"robot", "sessions"}, keysOf(t, m))
	first := m["sessions"].([]any)[0].(map[string]any)
	require.Contains(t, keysOf(t, first), "session_id")
	require.Contains(t, keysOf(t, first), "status")
	require.Contains(t, keysOf(t, first), "created_at")

	waitRetained(t, b, protocol.Topics{}.Metrics("r-3"), func(*protocol.Event) bool { return true })
	code, out, errOut = runFleetctl(t, "robots", "--broker", b, "--wait", "500ms")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^r-3 +online +\S+ +\S+ +\d+\.\d% +\d+\.\d% +s-\S+ running fake-optimize \d+% \S+ \(\+1 more\)$`, out)

	code, out, errOut = runFleetctl(t, "session", "cancel", "r-3", "s-follow", "--broker", b)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "session s-follow on r-3: cancelled")
	select {
	case r := <-followed:
		require.Equal(t, 4, r.code, "stdout:\n%s\nstderr:\n%s", r.out, r.errOut)
		require.Contains(t, r.out, "session s-follow on r-3 cancelled")
	case <-time.After(30 * time.Second):
		t.Fatal("the --follow of a cancelled session did not end")
	}

	// session follow attaches to s-long (started without --follow) and
	// exits 4 when it is cancelled.
	attached := make(chan result, 1)
	attachErr := &syncBuffer{}
	go func() {
		out := &syncBuffer{}
		err := runCommand(context.Background(), commands["session follow"], []string{"r-3", "s-long", "--broker", b, "--json"}, out, attachErr)
		attached <- result{exitCode("session follow", err, attachErr), out.String(), attachErr.String()}
	}()
	require.Eventually(t, func() bool { return strings.Contains(attachErr.String(), "% running") }, 30*time.Second, 20*time.Millisecond)
	code, out, errOut = runFleetctl(t, "session", "cancel", "r-3", "s-long", "--broker", b, "--json")
	require.Equal(t, 0, code, errOut)
	select {
	case r := <-attached:
		require.Equal(t, 4, r.code, "stdout:\n%s\nstderr:\n%s", r.out, r.errOut)
		require.Equal(t, "cancelled", decodeJSON(t, r.out)["status"])
	case <-time.After(30 * time.Second):
		t.Fatal("session follow of a cancelled session did not end")
	}
	require.Equal(t, map[string]any{"robot": "r-3", "session_id": "s-long", "status": "cancelled"}, decodeJSON(t, out))
	code, _, errOut = runFleetctl(t, "session", "cancel", "r-3", "s-long", "--broker", b)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "session_finished")
}

// TestSessionFollowInterrupted: interrupting --follow exits 130 and leaves
// the session running.
func TestSessionFollowInterrupted(t *testing.T) {
	broker := brokertest.StartMochi(t)
	startAgent(t, broker.URL(), "r-4")
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		err := runCommand(ctx, commands["session start"], []string{"r-4", "--broker", broker.URL(), "--pipeline", "fake-optimize",
			"--model", "m.onnx", "--param", "steps=1000", "--session-id", "s-int", "--follow"}, &syncBuffer{}, stderr)
		done <- exitCode("session start", err, stderr)
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "running") }, 30*time.Second, 50*time.Millisecond)
	cancel()
	require.Equal(t, 130, <-done)
	code, out, _ := runFleetctl(t, "sessions", "r-4", "--broker", broker.URL())
	require.Equal(t, 0, code)
	require.Regexp(t, `s-int +running`, out)

	// --follow-timeout gives up (exit 1) and says the session still runs.
	code, _, errOut := runFleetctl(t, "session", "start", "r-4", "--broker", broker.URL(), "--pipeline", "fake-optimize",
		"--model", "m.onnx", "--param", "steps=1000", "--session-id", "s-ft", "--follow", "--follow-timeout", "1s")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "session still running after --follow-timeout 1s: s-ft on r-4")
}

func TestPing(t *testing.T) {
	broker := brokertest.StartMochi(t)
	startAgent(t, broker.URL(), "r-5")
	code, out, errOut := runFleetctl(t, "ping", "r-5", "--broker", broker.URL())
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `^pong from r-5 in \d+\.\d ms: agent \S+, up \d+s\n$`, out)

	code, out, errOut = runFleetctl(t, "ping", "--json", "r-5", "--broker", broker.URL())
	require.Equal(t, 0, code, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, []string{"agent_version", "broker", "robot", "rtt_ms", "uptime_s"}, keysOf(t, m))
	require.Equal(t, broker.URL(), m["broker"])

	code, _, errOut = runFleetctl(t, "ping", "r-404", "--broker", broker.URL(), "--timeout", "300ms")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no reply from r-404 to ping")
}

// TestRobots: the table and --json from retained state: a real agent, a
// robot whose Last Will said offline, one that only has metrics.
func TestRobots(t *testing.T) {
	broker := brokertest.StartMochi(t)
	startAgent(t, broker.URL(), "r-6")
	waitRetained(t, broker.URL(), protocol.Topics{}.Metrics("r-6"), func(*protocol.Event) bool { return true })
	pub := dial(t, broker.URL(), "others")
	tp := protocol.Topics{}
	publish(t, pub, tp.Status("r-7"), statusPayload(t, "r-7", "offline", "lost"), true)
	publish(t, pub, tp.Metrics("r-8"), metricsPayload(t, "r-8", time.Minute, 0, 0), true)

	code, out, errOut := runFleetctl(t, "robots", "--broker", broker.URL(), "--wait", "500ms")
	require.Equal(t, 0, code, errOut)
	ls := lines(out)
	require.Len(t, ls, 4, out)
	require.Regexp(t, `^ROBOT +STATE +SINCE +VERSION +CPU +MEM +SESSION$`, ls[0])
	require.Regexp(t, `^r-6 +online +\d+s +\S+ +\d+\.\d% +\d+\.\d% +-$`, ls[1])
	require.Regexp(t, `^r-7 +offline \(lost\) +\d+s +1\.0\.0 +- +- +-$`, ls[2])
	require.Regexp(t, `^r-8 +unknown +- +- +\d+\.\d% +\d+\.\d% +-$`, ls[3])

	code, out, errOut = runFleetctl(t, "robots", "--broker", broker.URL(), "--wait", "500ms", "--json", "r-6", "r-7")
	require.Equal(t, 0, code, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, []string{"broker", "dropped", "robots"}, keysOf(t, m))
	robots := m["robots"].([]any)
	require.Len(t, robots, 2)
	r6 := robots[0].(map[string]any)
	require.Equal(t, []string{"agent_version", "cpu_percent", "hostname", "memory_percent", "metrics_at", "robot", "sessions", "since", "state"}, keysOf(t, r6))
	require.Equal(t, "online", r6["state"])
	require.Equal(t, []any{}, r6["sessions"])
	r7 := robots[1].(map[string]any)
	require.Equal(t, "lost", r7["reason"])
	require.Nil(t, r7["cpu_percent"])

	code, out, errOut = runFleetctl(t, "robots", "--broker", broker.URL(), "--ids")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, "r-6\nr-7\nr-8\n", out)
	code, _, errOut = runFleetctl(t, "robots", "--ids", "--json")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "--ids and --json exclude each other")

	empty := brokertest.StartMochi(t)
	code, _, errOut = runFleetctl(t, "robots", "--broker", empty.URL(), "--wait", "200ms")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no robots found")
}

// TestSessionFollowSurvivesBrokerRestart: the broker restarts mid-session;
// --follow reconnects, resubscribes, and the retained state and the agent's
// spooled events bring it to the end: exit 0.
func TestSessionFollowSurvivesBrokerRestart(t *testing.T) {
	broker := brokertest.StartMosquitto(t)
	startAgent(t, broker.URL(), "r-9")
	type result struct {
		code        int
		out, errOut string
	}
	done := make(chan result, 1)
	stderr := &syncBuffer{}
	go func() {
		stdout := &syncBuffer{}
		err := runCommand(context.Background(), commands["session start"], []string{"r-9", "--broker", broker.URL(), "--pipeline", "fake-optimize",
			"--model", "m.onnx", "--param", "steps=30", "--param", "step_delay=0.1", "--follow", "--follow-timeout", "90s"}, stdout, stderr)
		done <- result{exitCode("session start", err, stderr), stdout.String(), stderr.String()}
	}()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "optimize") }, 30*time.Second, 20*time.Millisecond, stderr.String())
	broker.Stop()
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "connection lost") }, 10*time.Second, 20*time.Millisecond)
	broker.Start()
	select {
	case r := <-done:
		require.Equal(t, 0, r.code, "stdout:\n%s\nstderr:\n%s", r.out, r.errOut)
		require.Contains(t, r.out, "completed")
	case <-time.After(100 * time.Second):
		t.Fatalf("--follow did not end after the broker came back:\n%s", stderr.String())
	}
}

// TestRobotsAtFleetScale: 1,000 robots' retained status, metrics and a
// running session each (3,000 retained messages) all reach the table, none
// dropped by the bounded collection queue.
func TestRobotsAtFleetScale(t *testing.T) {
	broker := brokertest.StartMochi(t)
	pub := dial(t, broker.URL(), "fleet")
	tp := protocol.Topics{}
	const n = 1000
	var toks []mqtt.Token
	for i := range n {
		r := fmt.Sprintf("r-%04d", i)
		st := protocol.SessionState{Status: protocol.StatusRunning, Pipeline: "quantize-int8", Model: "m.onnx", Percent: 50, Stage: "quantize", CreatedAt: protocol.Now()}
		toks = append(toks,
			pub.Publish(tp.Status(r), 1, true, statusPayload(t, r, "online", "")),
			pub.Publish(tp.Metrics(r), 1, true, metricsPayload(t, r, time.Second, 0, 0)),
			pub.Publish(tp.SessionState(r, "s-"+r), 1, true, encode(t, protocol.NewSessionEvent(r, "s-"+r, st), 3)))
	}
	for _, tok := range toks {
		require.True(t, tok.WaitTimeout(30*time.Second))
		require.NoError(t, tok.Error())
	}
	start := time.Now()
	code, out, errOut := runFleetctl(t, "robots", "--broker", broker.URL(), "--json") // the defaults
	require.Equal(t, 0, code, errOut)
	var got robotsOut
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, n, len(got.Robots), "robots in the table")
	require.Zero(t, got.Dropped)
	for _, r := range got.Robots {
		if r.State != "online" || r.CPUPercent == nil || len(r.Sessions) != 1 {
			t.Fatalf("robot %s: state %s, cpu %v, %d sessions", r.Robot, r.State, r.CPUPercent, len(r.Sessions))
		}
	}
	t.Logf("robots --json over %d robots: %s (of which --quiet 500ms)", n, time.Since(start).Round(time.Millisecond))
}

// TestEmbeddedBrokerAccounts: fleetctl against the relay's own embedded
// broker with accounts, as deployed: the agent connects as its confined
// robot account, the engineer as an admin account from a config file;
// a session runs to completion. Another robot's credentials get no further
// than CONNECT (a robot account is bound to its own client id), and
// neither does a wrong password.
func TestEmbeddedBrokerAccounts(t *testing.T) {
	isolate(t)
	addr := fmt.Sprintf("127.0.0.1:%d", brokertest.FreePort(t))
	b, err := broker.New(broker.Options{Listen: addr, Logger: slog.New(slog.DiscardHandler), Users: []broker.User{
		{Username: "r-emb", Password: "robot-secret"},
		{Username: "r-other", Password: "other-secret"},
		{Username: "eng", Password: "eng-secret", Admin: true},
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	url := "tcp://" + addr
	startAgentWith(t, url, "r-emb", []string{"ROBOT_AGENT_MQTT_USERNAME=r-emb", "ROBOT_AGENT_MQTT_PASSWORD=robot-secret"}, "eng", "eng-secret")

	cfg := writeFile(t, "eng.yaml", []byte("mqtt:\n  broker: "+url+"\n  username: eng\n  password: eng-secret\n"))
	code, out, errOut := runFleetctl(t, "session", "start", "r-emb", "--config", cfg, "--pipeline", "fake-optimize", "--model", "m.onnx",
		"--param", "steps=3", "--follow")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "completed")
	code, out, errOut = runFleetctl(t, "robots", "--config", cfg)
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^r-emb +online `, out)

	code, _, errOut = runFleetctl(t, "ping", "r-emb", "--broker", url, "--username", "r-other", "--password", "other-secret", "--timeout", "1s")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "connect to "+url+": not Authorized")

	code, _, errOut = runFleetctl(t, "ping", "r-emb", "--config", cfg, "--password", "wrong", "--connect-timeout", "2s")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to "+url)
}
