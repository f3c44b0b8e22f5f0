package e2e

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// Issue 9, broker side: an attacker holding one robot's credentials (r-1,
// stolen from hardware in the field) against the relay's embedded broker
// (the real fleet-relay binary) and against Mosquitto with the config and
// ACL that configs/mosquitto ships. The victim r-2 is a real robot-agent.
// Each attack is performed, then its effect is looked for.

func TestBrokerAttacksEmbedded(t *testing.T) {
	b := startEmbeddedTarget(t)
	runBrokerAttacks(t, b)

	// Beyond Mosquitto's rules (Mosquitto's ACL cannot see the retain flag,
	// has no Origin check and no login throttle):
	t.Run("retained messages only where spec §3 retains", func(t *testing.T) {
		r1 := mqttConnect(t, b, "r-1")
		for _, topic := range []string{secTopics.Alerts("r-1"), secTopics.Replies("r-1"), secTopics.SessionEvents("r-1", "s-1")} {
			publish(t, r1, topic, 0, true, []byte(`{"retained":"junk"}`))
		}
		publish(t, r1, secTopics.Status("r-1"), 1, true, []byte(`{"marker":1}`))
		got := retained(t, b, "fleet/v1/robots/r-1/#")
		if len(got) != 1 || got[secTopics.Status("r-1")].Payload == nil {
			t.Fatalf("retained under r-1: %v, want only its status", keys(got))
		}
	})
	t.Run("websocket listener refuses other origins", func(t *testing.T) {
		for origin, want := range map[string]int{"http://evil.example": http.StatusForbidden, "": http.StatusSwitchingProtocols,
			"http://" + b.wsAddr: http.StatusSwitchingProtocols} {
			h := http.Header{}
			if origin != "" {
				h.Set("Origin", origin)
			}
			c, resp, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).Dial("ws://"+b.wsAddr+"/", h)
			got := http.StatusSwitchingProtocols
			if err != nil {
				if resp == nil {
					t.Fatalf("dial %s: %v", b.wsAddr, err)
				}
				got = resp.StatusCode
			} else {
				c.Close()
			}
			if got != want {
				t.Errorf("Origin %q: HTTP %d, want %d", origin, got, want)
			}
		}
	})
	t.Run("repeated login failures are throttled", func(t *testing.T) {
		codes := []byte{}
		for range 12 {
			codes = append(codes, rawConnect(t, b, brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: "guess"}))
		}
		code := rawConnect(t, b, brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: secPasswords["r-1"]})
		if code != brokertest.ConnServerUnavailable || bytes.Count(codes, []byte{brokertest.ConnServerUnavailable}) == 0 {
			t.Fatalf("12 wrong passwords answered %v, then the right one %d: want throttling (%d)", codes, code, brokertest.ConnServerUnavailable)
		}
		// Other addresses are not throttled: the victim still gets in.
		mqttConnect(t, b, "fleet-relay")
	})
	t.Run("config check refuses anonymous off loopback", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "relay.yaml")
		if err := os.WriteFile(cfg, []byte("embedded_mqtt:\n  listen: 0.0.0.0:1883\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := start(t, "fleet-relay", []string{"FLEET_RELAY_EMBEDDED_MQTT_LISTEN="}, "config", "check", "--config", cfg)
		err := p.cmd.Wait()
		if err == nil || !strings.Contains(p.output(), "anonymous clients get full access") {
			t.Fatalf("config check: %v\n%s", err, p.output())
		}
	})
}

func TestBrokerAttacksMosquitto(t *testing.T) {
	runBrokerAttacks(t, startMosquittoTarget(t))
}

// runBrokerAttacks performs every broker-side attack of issue 9 that both
// brokers must stop. The embedded broker refuses a bad Will at CONNECT
// ("not authorized"); Mosquitto 2 accepts the CONNECT and drops the Will
// when it would publish it (ACL check): either way it must not land.
func runBrokerAttacks(t *testing.T, b *brokerTarget) {
	startVictim(t, b)
	obs := newObserver(t, b)
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range obs.since(0) {
				t.Logf("observer: %s retained=%v %.200s", m.Topic, m.Retained, m.Payload)
			}
		}
	})
	obs.waitFor(t, 0, "r-2 online", func(m mqttMsg) bool {
		return m.Topic == secTopics.Status("r-2") && statusState(m) == "online"
	})
	// victimStayed: r-2's agent was never disconnected (its Will says
	// offline) and still answers.
	victimStayed := func(t *testing.T, from int) {
		t.Helper()
		obs.pingVictim(t)
		for _, m := range obs.since(from) {
			if m.Topic == secTopics.Status("r-2") && statusState(m) != "online" {
				t.Fatalf("r-2's status went %q: %s", statusState(m), m.Payload)
			}
		}
		if st := retained(t, b, secTopics.Status("r-2"))[secTopics.Status("r-2")]; statusState(st) != "online" {
			t.Fatalf("r-2's retained status is %s, want online", st.Payload)
		}
	}

	t.Run("will on another robot's commands", func(t *testing.T) {
		from := obs.mark()
		cmd, id := commandPayload(t, "r-2", "ping")
		code := rawConnect(t, b, brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: secPasswords["r-1"],
			WillTopic: secTopics.Commands("r-2"), WillPayload: cmd, WillQoS: 1})
		if b.embedded && code != brokertest.ConnNotAuthorized {
			t.Errorf("CONNECT with a Will on r-2's commands answered %d, want %d (not authorized)", code, brokertest.ConnNotAuthorized)
		}
		victimStayed(t, from)
		for _, m := range obs.since(from) {
			if replyTo(m, "r-2", id) {
				t.Fatalf("r-2 executed the command r-1 planted as its Will: %s", m.Payload)
			}
		}
	})

	t.Run("retained will marking another robot offline", func(t *testing.T) {
		from := obs.mark()
		st := protocol.NewEvent("r-2", &protocol.RobotStatus{State: "offline", Reason: "lost"})
		st.Seq = 1 << 40
		payload, err := protocol.Encode(st)
		if err != nil {
			t.Fatal(err)
		}
		code := rawConnect(t, b, brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: secPasswords["r-1"],
			WillTopic: secTopics.Status("r-2"), WillPayload: payload, WillQoS: 1, WillRetain: true})
		if b.embedded && code != brokertest.ConnNotAuthorized {
			t.Errorf("CONNECT with a Will on r-2's status answered %d, want %d", code, brokertest.ConnNotAuthorized)
		}
		victimStayed(t, from)
	})

	t.Run("client id takeover", func(t *testing.T) {
		from := obs.mark()
		// The embedded broker refuses r-1 as r-2; Mosquitto
		// (use_username_as_clientid) connects it as r-1. Either way r-2
		// stays connected and its Will does not fire.
		rawConnect(t, b, brokertest.Connect{ClientID: "r-2", Username: "r-1", Password: secPasswords["r-1"]})
		victimStayed(t, from)
	})

	t.Run("publishing beyond its own topics", func(t *testing.T) {
		from := obs.mark()
		r1 := mqttConnect(t, b, "r-1")
		cmd, id := commandPayload(t, "r-2", "ping")
		publish(t, r1, secTopics.Commands("r-2"), 0, false, cmd)
		publish(t, r1, secTopics.Commands("r-1"), 0, true, cmd)
		offline, _ := protocol.Encode(protocol.NewEvent("r-2", &protocol.RobotStatus{State: "offline", Reason: "lost"}))
		publish(t, r1, secTopics.Status("r-2"), 0, true, offline)
		for _, junk := range []string{"fleet/v1/robots/r-1/junk/a/b", "fleet/v1/robots/r-1/status/x", "fleet/v1/robots/r-1/sessions/s-1",
			"fleet/v1/robots/r-1/sessions/s-1/state/x", "fleet/v1/robots", "fleet/v1/x", "other"} {
			publish(t, r1, junk, 0, true, []byte(`{"junk":true}`))
		}
		publish(t, r1, secTopics.Status("r-1"), 1, true, []byte(`{"marker":2}`))
		victimStayed(t, from)
		for _, m := range obs.since(from) {
			if replyTo(m, "r-2", id) {
				t.Fatalf("r-2 executed a command r-1 published: %s", m.Payload)
			}
			if m.Topic != secTopics.Status("r-1") && m.Topic != secTopics.Status("r-2") && !strings.HasPrefix(m.Topic, "fleet/v1/robots/r-2/") {
				t.Errorf("the observer got %s from r-1", m.Topic)
			}
		}
		for topic := range retained(t, b, "#") {
			if topic != secTopics.Status("r-1") && topic != secTopics.Status("r-2") && topic != secTopics.Metrics("r-2") {
				t.Errorf("retained after the attack: %s", topic)
			}
		}
	})

	t.Run("reading beyond its own commands", func(t *testing.T) {
		r1 := mqttConnect(t, b, "r-1")
		got := make(chan string, 100)
		for _, f := range []string{secTopics.Commands("r-2"), secTopics.AllRobots(), "#"} {
			tok := r1.Subscribe(f, 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
			tok.WaitTimeout(10 * time.Second)
		}
		obs.pingVictim(t)
		select {
		case topic := <-got:
			t.Fatalf("r-1 read %s", topic)
		default:
		}
	})

	t.Run("oversized retained publish", func(t *testing.T) {
		lost := make(chan struct{})
		r1 := mqttConnect(t, b, "r-1", func(o *paho.ClientOptions) {
			o.SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
		})
		r1.Publish(secTopics.Status("r-1"), 0, true, bytes.Repeat([]byte("x"), 1<<20))
		select {
		case <-lost:
		case <-time.After(20 * time.Second):
			t.Error("a 1 MiB publish did not close the connection")
		}
		if st := retained(t, b, secTopics.Status("r-1"))[secTopics.Status("r-1")]; len(st.Payload) >= 1<<20 {
			t.Fatalf("the broker kept a %d-byte retained message", len(st.Payload))
		}
	})

	t.Run("anonymous and wrong passwords", func(t *testing.T) {
		for _, c := range []brokertest.Connect{{ClientID: "anon"}, {ClientID: "r-2", Username: "r-2", Password: "guess"},
			{ClientID: "x", Username: "nobody", Password: "x"}} {
			if code := rawConnect(t, b, c); code == brokertest.ConnAccepted {
				t.Errorf("CONNECT %+v accepted", c)
			}
		}
	})
}

// rawConnect connects from attackerAddr and drops the connection without a
// DISCONNECT (firing any Will), returning the CONNACK code.
func rawConnect(t *testing.T, b *brokerTarget, c brokertest.Connect) byte {
	t.Helper()
	c.LocalAddr = attackerAddr
	conn, code, err := brokertest.RawConnect(b.addr, c)
	if err != nil {
		t.Fatalf("%s: raw connect: %v", b.name, err)
	}
	conn.Close()
	return code
}

func publish(t *testing.T, c paho.Client, topic string, qos byte, retain bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func keys(m map[string]mqttMsg) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	return out
}
