package relay_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

// robotsOf returns the robots of the event frames and snapshot entries in fs.
func robotsOf(t *testing.T, fs []frame) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, f := range fs {
		if f.Type == "event" {
			out[f.envelope(t).Robot]++
		}
		for _, raw := range f.Snapshot {
			ev, err := protocol.Decode(raw)
			require.NoError(t, err)
			out[ev.Robot]++
		}
	}
	return out
}

// TestFleetRoomFollowsGrant: a token scoped to r-1 in room fleet receives
// nothing of r-2, live or in the snapshot, and its system.status counts r-1
// only (spec §5: authorization of every frame).
func TestFleetRoomFollowsGrant(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Secret = secret
	r := startRelay(t, cfg)
	r1, r2 := newRobot(t, r.BrokerURL(), "r-1"), newRobot(t, r.BrokerURL(), "r-2")
	r2.send("", status("online"))
	r1.send("", status("online"))

	scoped := connect(t, r, mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour))
	admin := connect(t, r, mint(t, auth.RoleAdmin, []string{"*"}, time.Hour))
	require.Eventually(t, func() bool { return len(admin.subscribe("fleet").Snapshot) == 2 }, wait, 20*time.Millisecond)
	snap := scoped.subscribe("fleet")
	require.Equal(t, map[string]int{"r-1": 1}, robotsOf(t, []frame{snap}), "snapshot")

	r2.send("", status("online"))
	r2.send("", alert("cpu_hot", "firing"))
	r2.send("s-2", queued())
	r2.send("s-2", sessionState(protocol.StatusRunning))
	r2.send("s-2", protocol.SessionFailed{DurationS: 1, Error: protocol.ErrorInfo{Code: "runner_error", Message: "stderr tail: secret"}})
	// r-2's events and r-1's marker come through different MQTT
	// connections, whose order the broker does not promise: the marker is
	// sent once the admin has all of r-2's, so any leak precedes it.
	var afs []frame
	admin.until(func(f frame) bool {
		afs = append(afs, f)
		return robotsOf(t, afs)["r-2"] == 5
	})
	end := r1.send("", alert("end", "firing"))
	isEnd := func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == end.ID }
	require.Equal(t, map[string]int{"r-1": 1}, robotsOf(t, scoped.until(isEnd)), "live events of r-2 reached a token scoped to r-1")
	require.Equal(t, map[string]int{"r-1": 1, "r-2": 5}, robotsOf(t, append(afs, admin.until(isEnd)...)))

	r.Hub().SystemStatus(protocol.RelayStats{Version: "test"})
	sys := scoped.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).Type == protocol.TypeSystemStatus })
	st := sys[len(sys)-1].envelope(t).Data.(protocol.SystemStatus)
	require.Equal(t, 1, st.RobotsKnown, "system.status counts the granted robots only")
	sys = admin.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).Type == protocol.TypeSystemStatus })
	require.Equal(t, 2, sys[len(sys)-1].envelope(t).Data.(protocol.SystemStatus).RobotsKnown)
}

// TestSessionsBelongToTheirRobot: two robots using one session id have two
// sessions; neither changes the other's state, a viewer of session:<id>
// gets only its granted robots' events, and a start_session reusing
// another robot's session id is refused (spec §5).
func TestSessionsBelongToTheirRobot(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Secret = secret
	r := startRelay(t, cfg)
	r1, r2 := newRobot(t, r.BrokerURL(), "r-1"), newRobot(t, r.BrokerURL(), "r-2")
	r2.seq = 1000 // r-2's seqs are higher: under the old keying its state won

	r1.send("s-x", queued())
	r2.send("s-x", queued())
	require.Eventually(t, func() bool { return len(r.Hub().SessionRobots("s-x")) == 2 }, wait, 10*time.Millisecond)
	v1 := connect(t, r, mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour))
	v2 := connect(t, r, mint(t, auth.RoleViewer, []string{"r-2"}, time.Hour))
	v1.subscribe("session:s-x")
	v2.subscribe("session:s-x") // the owner's viewers are not refused because another robot used the id first

	own := r1.send("s-x", sessionState(protocol.StatusRunning))
	r2.send("s-x", sessionState(protocol.StatusCompleted))
	end1 := r1.send("s-x", progress(50))
	end2 := r2.send("s-x", progress(60))
	got1 := robotsOf(t, v1.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == end1.ID }))
	require.Equal(t, map[string]int{"r-1": 2}, got1)
	got2 := robotsOf(t, v2.until(func(f frame) bool { return f.Type == "event" && f.envelope(t).ID == end2.ID }))
	require.Equal(t, map[string]int{"r-2": 2}, got2)

	// r-1's state survives r-2's later, higher-seq state of the same id.
	c := connect(t, r, mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour))
	snap := c.subscribe("session:s-x")
	require.Equal(t, map[string]int{"r-1": 3}, robotsOf(t, []frame{snap}), "state, queued, progress")
	require.Equal(t, own.ID, snapshotIDs(t, snap)[0], "r-1's own session.state")
	fleet := c.subscribe("fleet")
	require.Contains(t, snapshotIDs(t, fleet), own.ID, "r-1's session is still running")
	admin := connect(t, r, mint(t, auth.RoleAdmin, []string{"*"}, time.Hour))
	require.Equal(t, map[string]int{"r-1": 3, "r-2": 3}, robotsOf(t, []frame{admin.subscribe("session:s-x")}),
		"an admin sees both robots' sessions of the id, each with its robot")

	// An operator of r-1 cannot start a session on r-1 with r-2's id.
	op := connect(t, r, mint(t, auth.RoleOperator, []string{"r-1"}, time.Hour))
	r2.send("s-y", queued())
	require.Eventually(t, func() bool { return len(r.Hub().SessionRobots("s-y")) == 1 }, wait, 10*time.Millisecond)
	op.send(map[string]any{"op": "command", "robot": "r-1", "name": "start_session", "ref": "x",
		"args": map[string]any{"pipeline": "quantize-int8", "model": "m.onnx", "session_id": "s-y"}})
	fs := op.until(func(f frame) bool { return f.Type == "error" || f.Type == "command_reply" })
	require.Equal(t, "bad_request", fs[len(fs)-1].Code, "%s", fs[len(fs)-1].raw)
}

// TestLargeFleetSnapshot: a 10,000-robot fleet snapshot (about 4 MiB, four
// times the client queue) reaches a dashboard in parts (spec §5 more).
func TestLargeFleetSnapshot(t *testing.T) {
	cfg := testConfig()
	// Reading 4 MiB under -race on a loaded machine takes longer than the
	// short test heartbeat; this test is about the snapshot, not liveness.
	cfg.WS.Heartbeat, cfg.WS.ClientGrace = time.Minute, time.Minute
	// Paced (ws.snapshot_rate_per_core), so the parts wait for the gate.
	cfg.WS.SnapshotRatePerCore = 4 << 20
	r := startRelay(t, cfg)
	const n = 10000
	for i := range n {
		ev := protocol.NewEvent(fmt.Sprintf("r-%05d", i), protocol.RobotStatus{State: "online", AgentVersion: "1.0.0",
			Hostname: "robot-host", OS: "linux", Arch: "arm64", StartedAt: protocol.Now(),
			Pipelines: []string{"quantize-int8", "quantize-fp16"}, Models: []string{"yolov8n.onnx", "resnet50.onnx", "mobilenet.onnx"}})
		ev.Seq = 1
		raw, err := protocol.Encode(ev)
		require.NoError(t, err)
		dec, err := protocol.Decode(raw)
		require.NoError(t, err)
		require.True(t, r.Hub().Ingest(dec, raw, false))
	}
	c := connect(t, r, "")
	c.send(map[string]any{"op": "subscribe", "room": "fleet"})
	robots, parts, bytes := map[string]bool{}, 0, 0
	fs := c.until(func(f frame) bool {
		var more struct {
			More bool `json:"more"`
		}
		if f.Type == "subscribed" || f.Type == "snapshot" {
			require.NoError(t, json.Unmarshal(f.raw, &more))
			return !more.More
		}
		return f.Type == "error"
	})
	for _, f := range fs {
		require.Contains(t, []string{"subscribed", "snapshot"}, f.Type, "%s", f.raw)
		parts++
		bytes += len(f.raw)
		for _, raw := range f.Snapshot {
			ev, err := protocol.Decode(raw)
			require.NoError(t, err)
			robots[ev.Robot] = true
		}
	}
	require.Len(t, robots, n)
	require.Greater(t, bytes, 2*cfg.WS.QueueBytes, "the snapshot is larger than the queue")
	require.Greater(t, parts, 1)
	require.Positive(t, r.Hub().SnapshotGate().Waits(), "4 MiB of parts went through the gate without being paced")
	// Still connected and live.
	c.send(map[string]any{"op": "ping", "ref": 1})
	require.Equal(t, "pong", c.next().Type)
}

// TestMarkGap: when ingest says the relay may have missed events, every
// affected room gets a gap notice and the next resume is not recovered,
// for robot and session rooms alike (issue 14 items 1 and 2).
func TestMarkGap(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg)
	rb := newRobot(t, r.BrokerURL(), "r-1")
	rb.send("", status("online"))
	rb.send("s-1", queued())
	last := rb.send("s-1", progress(10))
	c := connect(t, r, "")
	// The relay must hold the last event before the gap (a resume from
	// just before it returns it): one that arrived after would start the
	// new stretch and make the later resumes recovered.
	require.Eventually(t, func() bool {
		f := c.subscribe("session:s-1", last.Seq-1)
		return f.Recovered && bytes.Contains(f.raw, []byte(last.ID))
	}, wait, 20*time.Millisecond)
	c.subscribe("robot:r-1", last.Seq)
	c.subscribe("fleet")
	other := connect(t, r, "")
	other.subscribe("robot:r-2")

	r.Hub().MarkGap("r-1", "mqtt_session_lost")
	gaps := map[string]string{}
	c.until(func(f frame) bool {
		if f.Type == "gap" {
			var g struct{ Room, Reason string }
			require.NoError(t, json.Unmarshal(f.raw, &g))
			gaps[g.Room] = g.Reason
		}
		return len(gaps) == 3
	})
	require.Equal(t, map[string]string{"fleet": "mqtt_session_lost", "robot:r-1": "mqtt_session_lost",
		"session:s-1": "mqtt_session_lost"}, gaps)
	require.False(t, c.subscribe("robot:r-1", last.Seq).Recovered)
	require.False(t, c.subscribe("session:s-1", last.Seq).Recovered)

	// The first live event after the gap starts a new stretch the ring holds.
	next := rb.send("s-1", progress(20))
	require.Eventually(t, func() bool { return c.subscribe("session:s-1", next.Seq-1).Recovered }, wait, 20*time.Millisecond)
	require.False(t, c.subscribe("session:s-1", last.Seq-1).Recovered, "the hole stays a hole")
	other.send(map[string]any{"op": "ping", "ref": 1})
	require.Equal(t, "pong", other.next().Type, "rooms of other robots get no notice")
}

// TestCacheBudgetInMetrics: one robot publishing large events stays within
// hub.robot_bytes, and the evictions show in /metrics (issue 9 item 13).
func TestCacheBudgetInMetrics(t *testing.T) {
	cfg := testConfig()
	cfg.Hub.RobotBytes = 64 << 10
	r := startRelay(t, cfg)
	rb := newRobot(t, r.BrokerURL(), "r-1")
	big := make([]byte, 3000)
	for i := range big {
		big[i] = 'x'
	}
	for i := range 60 {
		rb.send(fmt.Sprintf("s-%d", i), protocol.SessionProgress{Percent: 1, Stage: "s", Message: string(big)})
	}
	c := connect(t, r, "")
	require.Eventually(t, func() bool { return len(c.subscribe(fmt.Sprintf("session:s-%d", 59)).Snapshot) == 1 }, wait, 20*time.Millisecond)
	require.LessOrEqual(t, r.Hub().Stats().CachedBytes.Load(), int64(64<<10))
	_, body := httpGet(t, "http://"+r.Addr()+"/metrics")
	var n int
	for _, l := range splitLines(body) {
		if _, err := fmtSscanf(l, "fleet_relay_cache_evictions_total %d", &n); err == nil {
			break
		}
	}
	require.Positive(t, n, "fleet_relay_cache_evictions_total")
}
