package natstest

// What NATS's MQTT gateway does with the things the fleet relies on, checked
// on a real 3-node cluster. configs/nats-cluster/README.md states the results;
// these tests keep that page true.

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

type rec struct {
	mu   sync.Mutex
	msgs []mqtt.Message
}

func (r *rec) add(_ mqtt.Client, m mqtt.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}
func (r *rec) count(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if topic == "" || m.Topic() == topic {
			n++
		}
	}
	return n
}
func (r *rec) last(topic string) mqtt.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.msgs) - 1; i >= 0; i-- {
		if r.msgs[i].Topic() == topic {
			return r.msgs[i]
		}
	}
	return nil
}

type clientOpt func(*mqtt.ClientOptions)

func connect(t *testing.T, url, id, user, pass string, opts ...clientOpt) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetConnectRetry(false)
	for _, f := range opts {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timeout", id)
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func mustConnect(t *testing.T, url, id, user, pass string, opts ...clientOpt) mqtt.Client {
	t.Helper()
	c, err := connect(t, url, id, user, pass, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sub(t *testing.T, c mqtt.Client, filter string, qos byte, r *rec) {
	t.Helper()
	tok := c.Subscribe(filter, qos, r.add)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func pub(t *testing.T, c mqtt.Client, topic string, qos byte, retained bool, payload string) error {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("publish %s: timeout", topic)
	}
	return tok.Error()
}

func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestGatewayBehaviour(t *testing.T) {
	c := StartCluster(t, 3)
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	t.Run("hash subscription across nodes, retained", func(t *testing.T) {
		robot := mustConnect(t, n1.MQTTURL(), "r-1", "r-1", RobotPassword("r-1"))
		if err := pub(t, robot, "fleet/v1/robots/r-1/status", 1, true, `{"state":"online"}`); err != nil {
			t.Fatal(err)
		}
		relay := mustConnect(t, n2.MQTTURL(), "relay-a", RelayUser, RelayPassword)
		var r rec
		sub(t, relay, "fleet/v1/robots/#", 1, &r)
		eventually(t, 10*time.Second, "retained status through node 2", func() bool { return r.count("fleet/v1/robots/r-1/status") == 1 })
		if !r.last("fleet/v1/robots/r-1/status").Retained() {
			t.Fatal("a retained message delivered on subscribe must carry the retain flag")
		}
		_ = pub(t, robot, "fleet/v1/robots/r-1/sessions/s-1/events", 1, false, `{"n":1}`)
		eventually(t, 10*time.Second, "live event through node 2", func() bool {
			return r.count("fleet/v1/robots/r-1/sessions/s-1/events") == 1
		})
	})

	t.Run("persistent session queues QoS 1 while away, on another node", func(t *testing.T) {
		keep := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
		relay := mustConnect(t, n2.MQTTURL(), "relay-persist", RelayUser, RelayPassword, keep)
		var r1 rec
		sub(t, relay, "fleet/v1/robots/#", 1, &r1)
		relay.Disconnect(100)
		robot := mustConnect(t, n1.MQTTURL(), "r-2", "r-2", RobotPassword("r-2"))
		for i := 0; i < 20; i++ {
			if err := pub(t, robot, "fleet/v1/robots/r-2/alerts", 1, false, fmt.Sprintf(`{"i":%d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
		var r2 rec
		o := mqtt.NewClientOptions().AddBroker(n3.MQTTURL()).SetClientID("relay-persist").SetUsername(RelayUser).
			SetPassword(RelayPassword).SetCleanSession(false).SetAutoReconnect(false)
		o.SetDefaultPublishHandler(r2.add)
		back := mqtt.NewClient(o)
		tok := back.Connect()
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("reconnect: %v", tok.Error())
		}
		defer back.Disconnect(50)
		if !tok.(*mqtt.ConnectToken).SessionPresent() {
			t.Fatal("session present should be true for a persistent session resumed on another node")
		}
		eventually(t, 15*time.Second, "20 queued alerts after the reconnect", func() bool {
			return r2.count("fleet/v1/robots/r-2/alerts") >= 20
		})
	})

	t.Run("robot may not publish or subscribe outside its own topics", func(t *testing.T) {
		relay := mustConnect(t, n1.MQTTURL(), "relay-watch", RelayUser, RelayPassword)
		var r rec
		sub(t, relay, "fleet/v1/robots/#", 1, &r)
		thief := mustConnect(t, n2.MQTTURL(), "r-1", "r-1", RobotPassword("r-1"))
		_ = pub(t, thief, "fleet/v1/robots/r-2/commands", 1, false, `{"name":"ping"}`)
		_ = pub(t, thief, "fleet/v1/robots/r-2/status", 1, true, `{"state":"offline"}`)
		_ = pub(t, thief, "fleet/v1/robots/r-1/junk/a", 1, true, `{}`)
		var spy rec
		if tok := thief.Subscribe("fleet/v1/robots/r-2/commands", 1, spy.add); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			if st := tok.(*mqtt.SubscribeToken).Result()["fleet/v1/robots/r-2/commands"]; st != 0x80 {
				t.Errorf("subscribe to another robot's commands: SUBACK %#x, want 0x80 (failure)", st)
			}
		}
		_ = pub(t, mustConnect(t, n3.MQTTURL(), "r-1-ok", "r-1", RobotPassword("r-1")), "fleet/v1/robots/r-1/alerts", 1, false, `{"ok":1}`)
		eventually(t, 10*time.Second, "the allowed alert", func() bool { return r.count("fleet/v1/robots/r-1/alerts") == 1 })
		time.Sleep(500 * time.Millisecond)
		for _, tp := range []string{"fleet/v1/robots/r-2/commands", "fleet/v1/robots/r-2/status", "fleet/v1/robots/r-1/junk/a"} {
			if n := r.count(tp); n != 0 {
				t.Errorf("%s: %d messages reached the relay, want 0", tp, n)
			}
		}
	})

	t.Run("will", func(t *testing.T) {
		relay := mustConnect(t, n1.MQTTURL(), "relay-will", RelayUser, RelayPassword)
		var r rec
		sub(t, relay, "fleet/v1/robots/#", 1, &r)
		// A Will on another robot's commands topic: CONNACK says whether the
		// gateway refused it; either way it must never be published.
		conn, code, err := RawConnect(n2.MQTTPort, "r-1", "r-1", RobotPassword("r-1"),
			&Will{Topic: "fleet/v1/robots/r-2/commands", Payload: []byte(`{"name":"evil"}`), QoS: 1, Retain: true})
		if err != nil || code != 0 {
			t.Fatalf("NATS 2.9 accepts such a CONNECT (the Will is checked when published): %v, CONNACK %d", err, code)
		}
		conn.Close() // dropped without DISCONNECT
		// The robot's own Will on its own status fires when it drops.
		conn, code, err = RawConnect(n2.MQTTPort, "r-1", "r-1", RobotPassword("r-1"),
			&Will{Topic: "fleet/v1/robots/r-1/status", Payload: []byte(`{"state":"offline"}`), QoS: 1, Retain: true})
		if err != nil || code != 0 {
			t.Fatalf("own Will: %v, CONNACK %d", err, code)
		}
		conn.Close()
		eventually(t, 10*time.Second, "r-1's own Will", func() bool {
			m := r.last("fleet/v1/robots/r-1/status")
			return m != nil && string(m.Payload()) == `{"state":"offline"}`
		})
		if n := r.count("fleet/v1/robots/r-2/commands"); n != 0 {
			t.Fatalf("the Will on r-2's commands reached %d subscribers", n)
		}
	})

	t.Run("client id takeover", func(t *testing.T) {
		// NATS has no binding of client id to user: r-1's credentials with
		// client id "r-2" take r-2's session over (documented in README).
		var lost sync.WaitGroup
		lost.Add(1)
		onLost := func(o *mqtt.ClientOptions) {
			o.SetConnectionLostHandler(func(mqtt.Client, error) { lost.Done() })
		}
		_ = mustConnect(t, n1.MQTTURL(), "r-2", "r-2", RobotPassword("r-2"), onLost)
		_ = mustConnect(t, n3.MQTTURL(), "r-2", "r-1", RobotPassword("r-1"))
		done := make(chan struct{})
		go func() { lost.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("r-2 kept its connection: NATS now binds client ids; update configs/nats-cluster/README.md")
		}
	})
}
