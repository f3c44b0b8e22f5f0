package e2e

// Scale-out on a 3-node NATS cluster (issue 11): relay replicas on different
// nodes, a robot on a third, history in JetStream.

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/internal/natstest"
)

// replica is a fleet-relay replica on one NATS node.
type replica struct {
	*system
	proc *proc
	env  []string
	conf string
}

// startReplica starts a relay whose MQTT broker is node and whose history is
// the cluster's JetStream, with its own client id.
func startReplica(t *testing.T, c *natstest.Cluster, node *natstest.Node, id string, extraYAML ...string) *replica {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "relay.yaml")
	yaml := fmt.Sprintf("mqtt:\n  username: %s\n  password: %s\n  client_id: %s\nnats:\n  username: %s\n  password: %s\n",
		natstest.RelayUser, natstest.RelayPassword, id, natstest.RelayUser, natstest.RelayPassword) + strings.Join(extraYAML, "")
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	rp := &replica{system: &system{httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}, conf: conf}
	rp.env = []string{"FLEET_RELAY_LISTEN=" + rp.httpAddr, "FLEET_RELAY_MQTT_BROKER=" + node.MQTTURL(),
		"FLEET_RELAY_NATS_URL=" + c.NATSURLs(), "FLEET_RELAY_AUTH_SECRET="}
	rp.start(t)
	return rp
}

func (rp *replica) start(t *testing.T) {
	t.Helper()
	rp.proc = start(t, "fleet-relay", rp.env, "--config", rp.conf)
	waitReady(t, rp.system, 30*time.Second)
}

func waitReady(t testing.TB, s *system, d time.Duration) {
	t.Helper()
	eventually(t, d, "relay /readyz 200 on "+s.httpAddr, func() bool {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (rp *replica) kill(t *testing.T) {
	t.Helper()
	_ = rp.proc.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = rp.proc.cmd.Process.Wait()
}

// clusterAgent runs r-1 against one node with its own account.
func clusterAgent(t *testing.T, s *system, node *natstest.Node, robot string) *proc {
	t.Helper()
	if s.models == "" {
		s.models = genModels(t)
	}
	return start(t, "robot-agent", []string{
		"ROBOT_AGENT_ROBOT_ID=" + robot,
		"ROBOT_AGENT_MQTT_BROKER=" + node.MQTTURL(),
		"ROBOT_AGENT_MQTT_USERNAME=" + robot,
		"ROBOT_AGENT_MQTT_PASSWORD=" + natstest.RobotPassword(robot),
		"ROBOT_AGENT_STATE_DIR=" + t.TempDir(),
		"ROBOT_AGENT_MODEL_DIRS=" + s.models,
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
	}, "run")
}

// sessionEvents collects the seqs of session sid's events on a robot room
// until session.completed, failing on a gap-free violation (seq must grow).
func collectUntilCompleted(t *testing.T, c *wsClient, sid string, seqs map[float64]bool) {
	t.Helper()
	c.waitFor(90*time.Second, "session "+sid+" completed", func(f map[string]any) bool {
		if f["type"] != "event" {
			return false
		}
		ev := f["event"].(map[string]any)
		if ev["session"] != sid {
			return false
		}
		if ev["type"] != "session.state" { // the latest state is a snapshot, not history
			seqs[ev["seq"].(float64)] = true
		}
		if ev["type"] == "session.failed" {
			t.Fatalf("session failed: %v", ev["data"])
		}
		return ev["type"] == "session.completed"
	})
}

func TestRelayReplicasOnNATSCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	a := startReplica(t, c, c.Nodes[0], "fleet-relay-a")
	b := startReplica(t, c, c.Nodes[1], "fleet-relay-b")
	clusterAgent(t, a.system, c.Nodes[2], "r-1")

	// Both replicas know the robot, from any node.
	ca, cb := dial(t, a.system), dial(t, b.system)
	for _, cl := range []*wsClient{ca, cb} {
		cl.send(map[string]any{"op": "subscribe", "room": "robot:r-1"})
		cl.waitFor(30*time.Second, "r-1 online and its metrics", func(f map[string]any) bool {
			return f["type"] == "event" && f["event"].(map[string]any)["type"] == "robot.metrics"
		})
	}

	// A command through replica b reaches the robot on node 3; its reply
	// comes back to that client only.
	cb.send(map[string]any{"op": "command", "robot": "r-1", "name": "start_session", "ref": "go",
		"args": map[string]any{"pipeline": "quantize-int8", "model": "cnn_opset17.onnx", "session_id": "s-c1"}})
	reply := cb.waitFor(30*time.Second, "command_reply on b", func(f map[string]any) bool { return f["type"] == "command_reply" })
	if reply["ok"] != true || reply["ref"] != "go" {
		t.Fatalf("command_reply %v", reply)
	}
	seqsA := map[float64]bool{}
	var lastA float64
	collectUntilCompleted(t, ca, "s-c1", seqsA)
	for s := range seqsA {
		lastA = max(lastA, s)
	}
	for len(seqsA) > 0 {
		f := ca.next(2 * time.Second)
		if f["type"] == "command_reply" {
			t.Fatalf("replica a's client got b's command reply: %v", f)
		}
		if f["type"] == "event" && f["event"].(map[string]any)["type"] == "robot.metrics" {
			break
		}
	}

	// Replica a is killed and restarted: it replays the stream before it
	// says ready, so a resume from the first event of the session is
	// complete, and a brand-new replica c answers the same.
	a.kill(t)
	a.start(t)
	c3 := startReplica(t, c, c.Nodes[2], "fleet-relay-c")
	var first float64 = -1
	for s := range seqsA {
		if first < 0 || s < first {
			first = s
		}
	}
	for name, s := range map[string]*system{"restarted a": a.system, "new c": c3.system} {
		cl := dial(t, s)
		cl.send(map[string]any{"op": "subscribe", "room": "session:s-c1", "since_seq": first - 1})
		sub := cl.waitFor(10*time.Second, "subscribed", func(f map[string]any) bool { return f["type"] == "subscribed" })
		if sub["recovered"] != true {
			t.Fatalf("%s: resume of session:s-c1 since %v: recovered %v", name, first-1, sub["recovered"])
		}
		got := map[float64]bool{}
		for _, e := range sub["snapshot"].([]any) {
			got[e.(map[string]any)["seq"].(float64)] = true
		}
		for s := range seqsA {
			if !got[s] {
				t.Fatalf("%s: resume lacks seq %v (has %d of %d events)", name, s, len(got), len(seqsA))
			}
		}
	}
	_ = lastA
}

func genModels(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "../agent/onnxq/internal/testmodels/genmodels", "-big=false", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("genmodels: %v\n%s", err, out)
	}
	return dir
}

// Until its history is replayed a relay takes no clients: a snapshot then
// would be partial and the replayed events would arrive as live ones, older
// than what the client already holds.
func TestRelayTakesNoClientsBeforeHistory(t *testing.T) {
	dead := freePort(t) // nothing listens: NATS "unreachable"
	s := &system{httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), mqttAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	start(t, "fleet-relay", []string{"FLEET_RELAY_LISTEN=" + s.httpAddr, "FLEET_RELAY_MQTT_BROKER=",
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=" + s.mqttAddr, "FLEET_RELAY_AUTH_SECRET=",
		"FLEET_RELAY_NATS_URL=nats://127.0.0.1:" + strconv.Itoa(dead)})
	eventually(t, 20*time.Second, "relay serving HTTP", func() bool {
		resp, err := http.Get("http://" + s.httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	time.Sleep(time.Second)
	for _, path := range []string{"/readyz", "/ws", "/socket.io/?EIO=4&transport=polling"} {
		resp, err := http.Get("http://" + s.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s before the history is replayed: %d, want 503", path, resp.StatusCode)
		}
	}
}

// A resume older than the relay's own ring is served from the JetStream
// stream: the rings here hold 4 events, a session has more.
func TestResumeOlderThanTheRingFromHistory(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	rp := startReplica(t, c, c.Nodes[0], "fleet-relay-small", "hub:\n  ring_events: 4\n")
	clusterAgent(t, rp.system, c.Nodes[0], "r-1")
	cl := dial(t, rp.system)
	cl.send(map[string]any{"op": "subscribe", "room": "robot:r-1"})
	cl.waitFor(30*time.Second, "r-1's metrics", func(f map[string]any) bool {
		return f["type"] == "event" && f["event"].(map[string]any)["type"] == "robot.metrics"
	})
	cl.send(map[string]any{"op": "command", "robot": "r-1", "name": "start_session", "ref": "go",
		"args": map[string]any{"pipeline": "quantize-int8", "model": "cnn_opset17.onnx", "session_id": "s-old"}})
	seqs := map[float64]bool{}
	collectUntilCompleted(t, cl, "s-old", seqs)
	if len(seqs) <= 4 {
		t.Fatalf("the session made %d events: not more than the ring holds", len(seqs))
	}
	first := float64(-1)
	for s := range seqs {
		if first < 0 || s < first {
			first = s
		}
	}
	for _, room := range []string{"session:s-old", "robot:r-1"} {
		c2 := dial(t, rp.system)
		c2.send(map[string]any{"op": "subscribe", "room": room, "since_seq": first - 1})
		sub := c2.waitFor(15*time.Second, "subscribed "+room, func(f map[string]any) bool { return f["type"] == "subscribed" })
		if sub["recovered"] != true {
			t.Fatalf("%s since %v: recovered %v, want true (served from the stream)", room, first-1, sub["recovered"])
		}
		got := map[float64]bool{}
		var last float64
		for _, e := range sub["snapshot"].([]any) {
			seq := e.(map[string]any)["seq"].(float64)
			if seq <= last && e.(map[string]any)["type"] != "robot.status" {
				t.Fatalf("%s: resume out of order at seq %v", room, seq)
			}
			last = max(last, seq)
			got[seq] = true
		}
		for s := range seqs {
			if !got[s] {
				t.Fatalf("%s: resume lacks seq %v (%d events)", room, s, len(got))
			}
		}
	}
}
