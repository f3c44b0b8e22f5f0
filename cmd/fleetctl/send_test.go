package main

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// fakeRobot answers commands on its commands topic like the agent would:
// ping succeeds, anything else is unknown_command. Before each real reply it
// sends a reply to some other command, which fleetctl must ignore.
type fakeRobot struct {
	mu       sync.Mutex // guards commands
	commands []*protocol.Event
}

func startFakeRobot(t *testing.T, url, robot string) *fakeRobot {
	t.Helper()
	r := &fakeRobot{}
	c := dial(t, url, "robot-"+robot)
	tp := protocol.Topics{}
	status := protocol.NewEvent(robot, protocol.RobotStatus{State: "online", AgentVersion: "1.0.0", StartedAt: protocol.Now()})
	publish(t, c, tp.Status(robot), encode(t, status, 1), true)
	seq := int64(1)
	tok := c.Subscribe(tp.Commands(robot), 1, func(c mqtt.Client, m mqtt.Message) {
		cmd, err := protocol.Decode(m.Payload())
		if err != nil {
			t.Errorf("robot got an invalid command: %v", err)
			return
		}
		r.mu.Lock()
		r.commands = append(r.commands, cmd)
		seq += 2
		s := seq
		r.mu.Unlock()
		d := cmd.Data.(protocol.Command)
		reply := protocol.CommandReply{CommandID: cmd.ID, OK: true, Result: protocol.PingResult{Pong: true, AgentVersion: "1.0.0", UptimeS: 12}, ReplyTo: d.ReplyTo}
		if d.Name != protocol.CmdPing {
			reply = protocol.CommandReply{CommandID: cmd.ID, Error: &protocol.CommandError{Code: protocol.CodeUnknownCommand, Message: "no command " + d.Name}}
		}
		decoy := protocol.NewEvent(robot, protocol.CommandReply{CommandID: "someone-elses", OK: true})
		decoy.Seq = s - 1
		ev := protocol.NewEvent(robot, reply)
		ev.Seq = s
		go func() { // never wait inside a paho callback
			for _, e := range []*protocol.Event{decoy, ev} {
				b, err := protocol.Encode(e)
				if err != nil {
					t.Errorf("encode reply: %v", err)
					return
				}
				c.Publish(tp.Replies(robot), 1, false, b).WaitTimeout(5 * time.Second)
			}
		}()
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	return r
}

func (r *fakeRobot) received() []*protocol.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*protocol.Event(nil), r.commands...)
}

func TestSend(t *testing.T) {
	broker := brokertest.StartMochi(t)
	robot := startFakeRobot(t, broker.URL(), "r-1")

	code, out, errOut := runFleetctl(t, "send", "--broker", broker.URL(), "r-1", "ping", "--args", `{"verbose":true}`, "--timeout", "5s")
	require.Equal(t, 0, code, errOut)
	reply, err := protocol.Decode([]byte(out))
	require.NoError(t, err, out)
	d := reply.Data.(protocol.CommandReply)
	require.True(t, d.OK)
	require.Equal(t, map[string]any{"pong": true, "agent_version": "1.0.0", "uptime_s": 12.0}, d.Result)

	cmds := robot.received()
	require.Len(t, cmds, 1)
	cmd := cmds[0]
	require.Equal(t, d.CommandID, cmd.ID)
	require.Equal(t, int64(0), cmd.Seq)
	require.Equal(t, "r-1", cmd.Robot)
	cd := cmd.Data.(protocol.Command)
	require.Equal(t, "ping", cd.Name)
	require.Equal(t, map[string]any{"verbose": true}, cd.Args)
	require.NotNil(t, cd.ExpiresAt)
	require.WithinDuration(t, time.Now().Add(5*time.Second), cd.ExpiresAt.Time, 3*time.Second)
}

func TestSendFailedCommand(t *testing.T) {
	broker := brokertest.StartMochi(t)
	t.Setenv("FLEETCTL_BROKER", broker.URL())
	robot := startFakeRobot(t, broker.URL(), "r-1")
	code, out, errOut := runFleetctl(t, "send", "r-1", "reboot", "--expires", "0")
	require.Equal(t, 1, code)
	require.Contains(t, out, `"code": "unknown_command"`)
	require.Contains(t, errOut, "fleetctl send: command failed: unknown_command: no command reboot")
	require.Nil(t, robot.received()[0].Data.(protocol.Command).ExpiresAt, "--expires 0 means no expiry")
}

func TestSendNoReply(t *testing.T) {
	broker := brokertest.StartMochi(t)
	code, _, errOut := runFleetctl(t, "send", "--broker", broker.URL(), "--timeout", "200ms", "r-404", "ping")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no reply from r-404 to ping")
	require.Contains(t, errOut, "within 200ms; no status seen from it")

	// A robot whose Last Will said offline: the message says so.
	pub := dial(t, broker.URL(), "lwt")
	lost := protocol.NewEvent("r-5", protocol.RobotStatus{State: "offline", Reason: "lost", AgentVersion: "1", StartedAt: protocol.Now()})
	publish(t, pub, protocol.Topics{}.Status("r-5"), encode(t, lost, 9), true)
	code, _, errOut = runFleetctl(t, "send", "--broker", broker.URL(), "--timeout", "300ms", "r-5", "ping")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "its last status is offline (lost)")
}

func TestSendMosquitto(t *testing.T) {
	broker := brokertest.StartMosquitto(t)
	startFakeRobot(t, broker.URL(), "r-7")
	code, out, errOut := runFleetctl(t, "send", "--broker", broker.URL(), "r-7", "ping")
	require.Equal(t, 0, code, errOut)
	var env map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &env))
	require.Equal(t, "command.reply", env["type"])
}

func TestSendUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"send"}, "want ROBOT NAME"},
		{[]string{"send", "r-1"}, "want ROBOT NAME"},
		{[]string{"send", "r-1", "ping", "extra"}, "want ROBOT NAME"},
		{[]string{"send", "r/1", "ping"}, `robot id "r/1" must match`},
		{[]string{"send", "r-1", "ping", "--args", "[1]"}, "--args must be a JSON object"},
		{[]string{"send", "r-1", "ping", "--args", "{"}, "--args must be a JSON object"},
		{[]string{"send", "r-1", "ping", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"send", "r-1", "", "--broker", "tcp://127.0.0.1:1"}, "data.name"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runFleetctl(t, tt.args...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, tt.want)
		})
	}
}
