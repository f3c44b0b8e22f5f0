package broker_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/protocol"
)

const wait = 5 * time.Second

func start(t *testing.T, users []broker.User) *broker.Broker {
	t.Helper()
	b, err := broker.New(broker.Options{Listen: "127.0.0.1:0", Users: users, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func client(t *testing.T, b *broker.Broker, user, pass string) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(user + "-" + protocol.NewID()[20:]).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(wait)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait))
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return c, nil
}

type received struct{ topics chan string }

func subscribe(t *testing.T, c mqtt.Client, filter string) (received, byte) {
	t.Helper()
	r := received{topics: make(chan string, 100)}
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { r.topics <- m.Topic() })
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	return r, tok.(*mqtt.SubscribeToken).Result()[filter]
}

func pub(t *testing.T, c mqtt.Client, topic string, qos byte, retained bool) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, []byte(`{}`))
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
}

// TestACL: robots publish only under their own tree and read only their own
// commands; admins and the relay's own account see everything.
func TestACL(t *testing.T) {
	b := start(t, []broker.User{
		{Username: "r-1", Password: "pw1"},
		{Username: "r-2", Password: "sha256:" + "93915a0a4bf8f634cb1856494dd4304472ad46b9827f541f76b6761c49cc55b0"}, // sha256("pw2")
		{Username: "eng", Password: "engpw", Admin: true},
	})
	tp := protocol.MustTopics("")
	user, pass := b.Credentials()
	relay, err := client(t, b, user, pass)
	require.NoError(t, err)
	all, code := subscribe(t, relay, tp.AllRobots())
	require.Equal(t, byte(1), code)

	_, err = client(t, b, "r-1", "wrong")
	require.Error(t, err, "bad password")
	_, err = client(t, b, "nobody", "x")
	require.Error(t, err, "unknown user")

	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	r2, err := client(t, b, "r-2", "pw2")
	require.NoError(t, err)
	eng, err := client(t, b, "eng", "engpw")
	require.NoError(t, err)

	// Subscriptions: own commands only.
	cmds, code := subscribe(t, r1, tp.Commands("r-1"))
	require.Equal(t, byte(1), code)
	_, code = subscribe(t, r1, tp.Commands("r-2"))
	require.Equal(t, byte(0x80), code, "another robot's commands")
	_, code = subscribe(t, r1, tp.AllRobots())
	require.Equal(t, byte(0x80), code, "the whole tree")
	_, code = subscribe(t, eng, tp.AllRobots())
	require.Equal(t, byte(1), code, "admin")

	// Publishing: own tree only, never commands.
	// (QoS 0: a refused QoS 1 publish disconnects an MQTT 3.1.1 client,
	// which has no negative PUBACK; see TestRefusedQoS1Disconnects.)
	pub(t, r1, tp.Status("r-1"), 1, true)
	pub(t, r1, tp.SessionEvents("r-1", "s-1"), 1, false)
	pub(t, r1, tp.Status("r-2"), 0, false)      // dropped
	pub(t, r1, tp.Commands("r-1"), 0, false)    // dropped: robots do not command
	pub(t, r1, "fleet/v1/robots/r-1", 0, false) // dropped: not under the tree
	pub(t, r2, tp.Status("r-2"), 1, true)
	pub(t, relay, tp.Commands("r-1"), 1, false)
	got := map[string]int{}
	deadline := time.After(wait)
	for len(got) < 4 {
		select {
		case topic := <-all.topics:
			got[topic]++
		case <-deadline:
			t.Fatalf("relay got %v", got)
		}
	}
	require.Equal(t, map[string]int{tp.Status("r-1"): 1, tp.SessionEvents("r-1", "s-1"): 1, tp.Status("r-2"): 1, tp.Commands("r-1"): 1}, got)
	select {
	case topic := <-cmds.topics:
		require.Equal(t, tp.Commands("r-1"), topic)
	case <-time.After(wait):
		t.Fatal("r-1 did not get its command")
	}
}

// TestRefusedQoS1Disconnects: a robot publishing QoS 1 outside its tree
// is disconnected.
func TestRefusedQoS1Disconnects(t *testing.T) {
	b := start(t, []broker.User{{Username: "r-1", Password: "pw1"}})
	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	tok := r1.Publish(protocol.MustTopics("").Status("r-2"), 1, false, []byte(`{}`))
	require.True(t, tok.WaitTimeout(wait))
	require.Error(t, tok.Error())
}

// TestAnonymous: with no users every client has full access.
func TestAnonymous(t *testing.T) {
	b := start(t, nil)
	c, err := client(t, b, "", "")
	require.NoError(t, err)
	_, code := subscribe(t, c, "fleet/v1/robots/#")
	require.Equal(t, byte(1), code)
}

// TestListenOnlyWhereConfigured: a second broker cannot take a bound port.
func TestListenOnlyWhereConfigured(t *testing.T) {
	b := start(t, nil)
	_, err := broker.New(broker.Options{Listen: b.Addr(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.ErrorIs(t, err, broker.ErrListen)
}
