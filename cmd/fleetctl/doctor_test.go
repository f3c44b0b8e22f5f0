package main

import (
	"encoding/json"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// metricsPayload is the catalog's example metrics for robot, with its ts
// age in the past and the given outbox figures.
func metricsPayload(t *testing.T, robot string, age time.Duration, depth, dropped int64) []byte {
	t.Helper()
	f, ok := protocol.FixtureNamed("example/" + protocol.TypeRobotMetrics)
	require.True(t, ok)
	ev, err := protocol.Decode(f.Payload)
	require.NoError(t, err)
	ev.Robot = robot
	ev.TS = protocol.T(time.Now().Add(-age))
	m := ev.Data.(protocol.RobotMetrics)
	m.Agent.SpoolDepth, m.Agent.SpoolDropped = depth, dropped
	ev.Data = m
	return encode(t, ev, 2)
}

// statusPayload is a robot.status of robot.
func statusPayload(t *testing.T, robot, state, reason string) []byte {
	t.Helper()
	ev := protocol.NewEvent(robot, protocol.RobotStatus{State: state, Reason: reason, AgentVersion: "1.0.0", Hostname: "h-" + robot, StartedAt: protocol.T(time.Now().Add(-time.Hour))})
	return encode(t, ev, 1)
}

// checkLine finds the report line of robot's check name.
func checkOf(t *testing.T, rep doctorReport, robot, name string) doctorCheck {
	t.Helper()
	for _, r := range rep.Robots {
		if r.Robot != robot {
			continue
		}
		for _, c := range r.Checks {
			if c.Name == name {
				return c
			}
		}
	}
	require.Failf(t, "check not found", "robot %s check %s in %+v", robot, name, rep)
	return doctorCheck{}
}

func TestDoctorHealthyRobotPings(t *testing.T) {
	broker := brokertest.StartMochi(t)
	robot := startFakeRobot(t, broker.URL(), "r-1") // retained online status, answers ping
	c := dial(t, broker.URL(), "metrics-r-1")
	tp := protocol.Topics{}
	publish(t, c, tp.Metrics("r-1"), metricsPayload(t, "r-1", time.Second, 3, 0), true)

	code, out, errOut := runFleetctl(t, "doctor", "--broker", broker.URL(), "r-1", "--timeout", "5s")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	t.Logf("report:\n%s", out)
	require.Contains(t, out, "robot r-1\n")
	for _, want := range []string{"OK    status    online", "OK    metrics", "OK    spool     depth 3", "OK    payloads  2 valid", "OK    ping      reply in"} {
		require.Contains(t, out, want)
	}
	require.Contains(t, out, "1 robots, 0 FAIL, 0 WARN")
	require.Len(t, robot.received(), 1, "one ping")
	require.Equal(t, protocol.CmdPing, robot.received()[0].Data.(protocol.Command).Name)

	// --json carries the same report.
	code, out, errOut = runFleetctl(t, "doctor", "--broker", broker.URL(), "--json", "r-1")
	require.Equal(t, 0, code, errOut)
	var rep doctorReport
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.Equal(t, levelOK, checkOf(t, rep, "r-1", "ping").Level)
	require.Zero(t, rep.Fails)
}

func TestDoctorFleet(t *testing.T) {
	tp := protocol.Topics{}
	cases := []struct {
		name      string
		publish   func(t *testing.T, c mqtt.Client)
		code      int
		check     string // the check to look at, of robot r-2
		level     string
		detailHas string
	}{
		{
			name: "offline lost",
			publish: func(t *testing.T, c mqtt.Client) {
				publish(t, c, tp.Status("r-2"), statusPayload(t, "r-2", "offline", "lost"), true)
			},
			code: 1, check: "status", level: levelFail, detailHas: "offline (lost)",
		},
		{
			name: "invalid retained metrics",
			publish: func(t *testing.T, c mqtt.Client) {
				f, ok := protocol.FixtureNamed("data/metrics-missing-cpu")
				require.True(t, ok)
				publish(t, c, tp.Status("r-2"), statusPayload(t, "r-2", "online", ""), true)
				publish(t, c, tp.Metrics("r-2"), f.Payload, true)
			},
			code: 1, check: "payloads", level: levelFail, detailHas: "data.cpu: is required",
		},
		{
			name: "stale metrics",
			publish: func(t *testing.T, c mqtt.Client) {
				publish(t, c, tp.Status("r-2"), statusPayload(t, "r-2", "online", ""), true)
				publish(t, c, tp.Metrics("r-2"), metricsPayload(t, "r-2", 2*time.Minute, 0, 0), true)
			},
			code: 0, check: "metrics", level: levelWarn, detailHas: "stale",
		},
		{
			name: "spool dropped",
			publish: func(t *testing.T, c mqtt.Client) {
				publish(t, c, tp.Status("r-2"), statusPayload(t, "r-2", "online", ""), true)
				publish(t, c, tp.Metrics("r-2"), metricsPayload(t, "r-2", 0, 5, 7), true)
			},
			code: 0, check: "spool", level: levelWarn, detailHas: "dropped 7",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			broker := brokertest.StartMochi(t)
			c := dial(t, broker.URL(), "fake-robots")
			// r-1 is healthy; r-2 has the case's trouble.
			publish(t, c, tp.Status("r-1"), statusPayload(t, "r-1", "online", ""), true)
			publish(t, c, tp.Metrics("r-1"), metricsPayload(t, "r-1", 0, 0, 0), true)
			tc.publish(t, c)

			code, out, errOut := runFleetctl(t, "doctor", "--broker", broker.URL(), "--wait", "500ms")
			require.Equal(t, tc.code, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
			t.Logf("report:\n%s%s", out, errOut)
			require.Contains(t, out, "robot r-1\n")
			require.Contains(t, out, "robot r-2\n")
			require.NotContains(t, out, "ping", "no ping without ROBOT")
			if tc.code == 1 {
				require.Contains(t, errOut, "checks failed")
			}

			code, out, _ = runFleetctl(t, "doctor", "--broker", broker.URL(), "--wait", "500ms", "--json")
			require.Equal(t, tc.code, code)
			var rep doctorReport
			require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
			got := checkOf(t, rep, "r-2", tc.check)
			require.Equal(t, tc.level, got.Level, got.Detail)
			require.Contains(t, got.Detail, tc.detailHas)
			for _, r := range rep.Robots {
				if r.Robot == "r-1" {
					for _, c := range r.Checks {
						require.Equal(t, levelOK, c.Level, "healthy r-1: %+v", c)
					}
				}
			}
		})
	}
}

func TestDoctorPingTimeout(t *testing.T) {
	broker := brokertest.StartMochi(t)
	c := dial(t, broker.URL(), "silent-robot")
	tp := protocol.Topics{}
	// Online by its retained status, but nobody answers commands.
	publish(t, c, tp.Status("r-9"), statusPayload(t, "r-9", "online", ""), true)
	publish(t, c, tp.Metrics("r-9"), metricsPayload(t, "r-9", 0, 0, 0), true)

	code, out, errOut := runFleetctl(t, "doctor", "--broker", broker.URL(), "--timeout", "300ms", "r-9")
	require.Equal(t, 1, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "FAIL  ping      no reply to ping")
}

func TestDoctorNoRobots(t *testing.T) {
	broker := brokertest.StartMochi(t)
	for _, args := range [][]string{{}, {"r-404"}} {
		code, out, errOut := runFleetctl(t, append([]string{"doctor", "--broker", broker.URL(), "--wait", "200ms"}, args...)...)
		require.Equal(t, 1, code, out)
		require.Contains(t, errOut, "no robots found")
		require.Contains(t, errOut, broker.URL())
	}
}

func TestDoctorUnreachableBroker(t *testing.T) {
	url := "tcp://127.0.0.1:1" // nothing listens on port 1
	code, out, errOut := runFleetctl(t, "doctor", "--broker", url, "--connect-timeout", "2s")
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "fleetctl doctor: connect to "+url)
	require.Empty(t, out)
}

func TestDoctorUsage(t *testing.T) {
	for _, args := range [][]string{{"r-1", "r-2"}, {"bad/robot"}, {"--timeout", "0s"}, {"--prefix", "a/+"}} {
		code, _, errOut := runFleetctl(t, append([]string{"doctor"}, args...)...)
		require.Equal(t, 2, code, "%q: %s", args, errOut)
	}
}
