package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/protocol"
)

// answer makes r answer every command on its commands topic, as an agent
// would, and returns the commands it saw.
func (r *robot) answer(result map[string]any) chan *protocol.Event {
	r.t.Helper()
	seen := make(chan *protocol.Event, 10)
	tok := r.c.Subscribe(r.topics.Commands(r.id), 1, func(_ mqtt.Client, m mqtt.Message) {
		ev, err := protocol.Decode(m.Payload())
		if err != nil {
			return
		}
		seen <- ev
		cmd := ev.Data.(protocol.Command)
		rep := protocol.CommandReply{CommandID: ev.ID, OK: true, Result: result, ReplyTo: cmd.ReplyTo}
		if cmd.Name != "ping" {
			rep = protocol.CommandReply{CommandID: ev.ID, OK: false, Error: &protocol.CommandError{Code: "unknown_command", Message: "no " + cmd.Name}}
		}
		out := protocol.NewEvent(r.id, rep)
		out.Seq = 1000 + int64(len(seen))
		b, _ := protocol.Encode(out)
		go r.c.Publish(r.topics.Replies(r.id), 1, false, b)
	})
	require.True(r.t, tok.WaitTimeout(wait))
	require.NoError(r.t, tok.Error())
	return seen
}

// TestCommands: round trip, robot_offline, robot_timeout, against both brokers.
func TestCommands(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Commands.Timeout = 500 * time.Millisecond
			b.setup(t, &cfg)
			r := startRelay(t, cfg)
			url := brokerURL(r, cfg)
			c := connect(t, r, "")
			other := connect(t, r, "")
			other.subscribe("robot:r-1")

			rb := newRobot(t, url, "r-1")
			rb.send("", status("online"))
			seen := rb.answer(map[string]any{"pong": true})

			c.send(map[string]any{"op": "command", "robot": "r-1", "name": "ping", "args": map[string]any{}, "ref": "c1"})
			f := c.until(func(f frame) bool { return f.Type == "command_reply" || f.Type == "error" })[0]
			require.Equal(t, "command_reply", f.Type, "%s", f.raw)
			require.True(t, f.OK)
			require.Equal(t, `"c1"`, string(f.Ref))
			require.JSONEq(t, `{"pong":true}`, string(f.Result))
			cmd := <-seen
			require.Equal(t, protocol.TypeCommand, cmd.Type)
			require.Equal(t, "r-1", cmd.Robot)
			require.Zero(t, cmd.Seq)
			exp := cmd.Data.(protocol.Command).ExpiresAt
			require.NotNil(t, exp, "expires_at is set")
			require.WithinDuration(t, time.Now().Add(cfg.Commands.Timeout), exp.Time, 2*time.Second)

			// A failing command comes back as command_reply ok=false.
			c.send(map[string]any{"op": "command", "robot": "r-1", "name": "fly", "ref": "c2"})
			f = c.until(func(f frame) bool { return f.Type == "command_reply" })[0]
			require.False(t, f.OK)
			require.Contains(t, string(f.Error), "unknown_command")

			// The reply went to the asking client only, not to another
			// client's command_reply (the robot room sees the command.reply
			// event as it sees everything the robot publishes).
			fs := other.until(func(f frame) bool {
				return f.Type == "event" && f.envelope(t).Type == protocol.TypeCommandReply
			})
			for _, f := range fs {
				require.NotEqual(t, "command_reply", f.Type)
			}

			// Silence: robot_timeout after the timeout.
			silent := newRobot(t, url, "r-2")
			silent.send("", status("online"))
			require.Eventually(t, func() bool { _, ok := r.Hub().RobotState("r-2"); return ok }, wait, 10*time.Millisecond)
			c.send(map[string]any{"op": "command", "robot": "r-2", "name": "ping", "ref": "c3"})
			f = c.until(func(f frame) bool { return f.Type == "error" })[0]
			require.Equal(t, "robot_timeout", f.Code)
			require.Equal(t, `"c3"`, string(f.Ref))

			// Offline: robot_offline at once.
			silent.send("", status("offline"))
			require.Eventually(t, func() bool { s, _ := r.Hub().RobotState("r-2"); return s == "offline" }, wait, 10*time.Millisecond)
			start := time.Now()
			c.send(map[string]any{"op": "command", "robot": "r-2", "name": "ping", "ref": "c4"})
			f = c.until(func(f frame) bool { return f.Type == "error" })[0]
			require.Equal(t, "robot_offline", f.Code)
			require.Less(t, time.Since(start), cfg.Commands.Timeout, "robot_offline comes before any timeout")
		})
	}
}

// TestCommandWithRobotAgent: a command round trip with the real robot-agent
// binary on the embedded broker, authenticated as a robot user.
func TestCommandWithRobotAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "robot-agent")
	build := exec.Command("go", "build", "-o", bin, "github.com/robotfleet/fleetlink/cmd/robot-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the robot-agent binary does not build yet, so the real round trip cannot run: %v\n%s", err, out)
	}

	cfg := testConfig()
	cfg.Embedded.Users = []broker.User{{Username: "r-agent", Password: "pw-r-agent"}}
	cfg.Commands.Timeout = time.Second
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	c.subscribe("robot:r-agent")

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run")
	cmd.Env = append(os.Environ(),
		"ROBOT_AGENT_ROBOT_ID=r-agent",
		"ROBOT_AGENT_MQTT_BROKER="+r.BrokerURL(),
		"ROBOT_AGENT_MQTT_USERNAME=r-agent",
		"ROBOT_AGENT_MQTT_PASSWORD=pw-r-agent",
		"ROBOT_AGENT_STATE_DIR="+t.TempDir(),
		"ROBOT_AGENT_MODEL_DIRS="+t.TempDir(),
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
	)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	var logs strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		<-logDone
		if t.Failed() {
			t.Logf("robot-agent log:\n%s", logs.String())
		}
	})

	// The agent announces itself online.
	c.until(func(f frame) bool {
		if f.Type != "event" {
			return false
		}
		ev := f.envelope(t)
		return ev.Type == protocol.TypeRobotStatus && ev.Data.(protocol.RobotStatus).State == "online"
	})
	// The agent publishes online before it subscribes to its commands, so
	// the first command may find no subscriber: retry on robot_timeout.
	var last frame
	for i := 0; i < 8; i++ {
		c.send(map[string]any{"op": "command", "robot": "r-agent", "name": "ping", "ref": i})
		f := c.until(func(f frame) bool { return f.Type == "command_reply" || f.Type == "error" })
		last = f[len(f)-1]
		if last.Type != "error" || last.Code != "robot_timeout" {
			break
		}
	}
	require.Equal(t, "command_reply", last.Type, "%s", last.raw)
	require.True(t, last.OK, "%s", last.raw)
	var res map[string]any
	require.NoError(t, json.Unmarshal(last.Result, &res))
	require.Equal(t, true, res["pong"])
}
