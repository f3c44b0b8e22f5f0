package socketio

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/command"
	relayingest "github.com/robotfleet/fleetlink/cloud/ingest"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// fakeRobot is an MQTT client that publishes a robot's events and answers
// its commands the way the agent does.
type fakeRobot struct {
	t   *testing.T
	id  string
	mc  mqtt.Client
	seq int64
}

func newFakeRobot(t *testing.T, broker, id string) *fakeRobot {
	t.Helper()
	r := &fakeRobot{t: t, id: id}
	mo := mqtt.NewClientOptions().AddBroker(broker).SetClientID("robot-" + id).SetAutoReconnect(false)
	r.mc = mqtt.NewClient(mo)
	tok := r.mc.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { r.mc.Disconnect(100) })
	tok = r.mc.Subscribe(protocol.Topics{}.Commands(id), 1, func(_ mqtt.Client, m mqtt.Message) {
		ev, err := protocol.Decode(m.Payload())
		if err != nil {
			t.Errorf("robot got an invalid command: %v", err)
			return
		}
		c := ev.Data.(protocol.Command)
		r.publish(protocol.Topics{}.Replies(id), protocol.NewEvent(id, protocol.CommandReply{CommandID: ev.ID, OK: true,
			Result: map[string]any{"pong": true, "echo": c.Name}}))
	})
	require.True(t, tok.WaitTimeout(5*time.Second))
	require.NoError(t, tok.Error())
	return r
}

func (r *fakeRobot) publish(topic string, ev *protocol.Event) {
	r.seq++
	ev.Seq = r.seq
	b, err := protocol.Encode(ev)
	if err != nil {
		r.t.Errorf("encode: %v", err)
		return
	}
	tok := r.mc.Publish(topic, 1, false, b)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		r.t.Errorf("publish %s: %v", topic, tok.Error())
	}
}

// TestThroughBroker runs the relay's path end to end: a robot publishes to a
// real broker (mochi), the relay's ingest feeds the hub, the real
// socket.io-client receives; a `command` event goes back to the robot and
// its reply comes back through the ack and as command_reply.
func TestThroughBroker(t *testing.T) {
	broker := brokertest.StartMochi(t)
	var in *relayingest.Client
	e := start(t, func(o *Options) {
		var tracker *command.Tracker
		var err error
		in, err = relayingest.New(relayingest.Options{Broker: broker.URL(), Hub: o.Hub,
			OnReply: func(ev *protocol.Event, raw []byte) { tracker.Reply(ev, raw) }})
		require.NoError(t, err)
		// The tracker publishes through the ingest client, as in the relay.
		tracker, err = command.New(command.Options{Publisher: in, RobotState: o.Hub.RobotState, Timeout: 5 * time.Second})
		require.NoError(t, err)
		t.Cleanup(tracker.Close)
		o.Commands = tracker
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = in.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, in.Ready, 10*time.Second, 10*time.Millisecond)

	const robot, sess = "r-mqtt", "s-mqtt"
	r := newFakeRobot(t, broker.URL(), robot)
	d := newDriver(t)
	require.Equal(t, "connect", d.connect(e.ts.URL, token(t, auth.RoleOperator), nil).Type)
	d.emit("s", "subscribe_session", map[string]any{"session_id": sess})
	d.ack("s")

	topic := protocol.Topics{}.SessionEvents(robot, sess)
	r.publish(topic, protocol.NewSessionEvent(robot, sess, protocol.SessionStarted{Pipeline: "quantize-int8", Model: "m.onnx"}))
	for i := range 3 {
		r.publish(topic, protocol.NewSessionEvent(robot, sess, protocol.SessionProgress{Percent: float64(10 * (i + 1)), Stage: "quantize", ElapsedS: float64(i)}))
	}
	assert.Equal(t, "session_started", d.event("session_started").Event)
	for i := range 3 {
		ev := d.event("session_progress").envelope(t)
		assert.Equal(t, float64(10*(i+1)), ev.Data.(protocol.SessionProgress).Percent)
	}

	d.emit("c", "command", map[string]any{"robot": robot, "name": "ping", "args": map[string]any{}})
	reply := decodeJSON[struct {
		OK        bool            `json:"ok"`
		Result    json.RawMessage `json:"result"`
		CommandID string          `json:"command_id"`
		Robot     string          `json:"robot"`
	}](t, d.ack("c").Data)
	assert.True(t, reply.OK)
	assert.JSONEq(t, `{"pong":true,"echo":"ping"}`, string(reply.Result))
	assert.NotEmpty(t, reply.CommandID)
	assert.Equal(t, robot, reply.Robot)
	d.event("command_reply")
}
