package e2e

// Faults between fleet-relay and its broker (issue 14 items 1 and the
// reconnect timing, issue 11 broker lists): the real relay binary, a real
// broker (Mosquitto, or the embedded mochi broker of a second relay), a
// controllable TCP proxy on the relay's path, a robot publishing QoS 1
// events straight to the broker and a dashboard client on /ws recording
// every frame.

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/internal/tcpproxy"
	"github.com/robotfleet/fleetlink/protocol"
)

// startRelayOn runs fleet-relay against external brokers (comma-separated
// tcp URLs) with a fixed client id and waits until it is ready.
func startRelayOn(t *testing.T, brokers, clientID string) *system {
	t.Helper()
	s := &system{httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	start(t, "fleet-relay", []string{"FLEET_RELAY_LISTEN=" + s.httpAddr, "FLEET_RELAY_MQTT_BROKER=" + brokers,
		"FLEET_RELAY_MQTT_CLIENT_ID=" + clientID, "FLEET_RELAY_AUTH_SECRET="})
	waitReady(t, s, 30*time.Second)
	return s
}

func (s *system) ready() bool {
	resp, err := http.Get("http://" + s.httpAddr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// proxyTo starts a tcpproxy to addr, closed by t.Cleanup.
func proxyTo(t *testing.T, addr string) *tcpproxy.Proxy {
	t.Helper()
	px, err := tcpproxy.New(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return px
}

// pubRobot is a robot that publishes QoS 1 notifications and waits for each
// PUBACK: once acknowledged, the broker owns the event.
type pubRobot struct {
	t   *testing.T
	id  string
	c   mqtt.Client
	seq int64
}

func newPubRobot(t *testing.T, brokerURL, id string) *pubRobot {
	t.Helper()
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(id + "-sim").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("robot connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return &pubRobot{t: t, id: id, c: c}
}

func (r *pubRobot) publish(n int, every time.Duration) []string {
	r.t.Helper()
	var ids []string
	topic := protocol.MustTopics("").Notifications(r.id)
	for i := 0; i < n; i++ {
		r.seq++
		ev := protocol.NewEvent(r.id, protocol.RobotNotification{Level: "info", Title: "event " + strconv.Itoa(i)})
		ev.Seq = r.seq
		b, err := protocol.Encode(ev)
		if err != nil {
			r.t.Fatal(err)
		}
		if tok := r.c.Publish(topic, 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			r.t.Fatalf("publish: %v", tok.Error())
		}
		ids = append(ids, ev.ID)
		time.Sleep(every)
	}
	return ids
}

// frameLog is a dashboard client that records every frame it reads.
type frameLog struct {
	mu     sync.Mutex
	events map[string]bool // event ids
	frames []map[string]any
	conn   *websocket.Conn
}

func watchRooms(t *testing.T, s *system, rooms ...string) *frameLog {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+s.httpAddr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	rec := &frameLog{events: map[string]bool{}, conn: c}
	for _, room := range rooms {
		if err := c.WriteJSON(map[string]any{"op": "subscribe", "room": room}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var f map[string]any
			if json.Unmarshal(b, &f) != nil {
				continue
			}
			rec.mu.Lock()
			rec.frames = append(rec.frames, f)
			if f["type"] == "event" {
				if ev, ok := f["event"].(map[string]any); ok {
					if id, ok := ev["id"].(string); ok {
						rec.events[id] = true
					}
				}
			}
			rec.mu.Unlock()
		}
	}()
	eventually(t, 10*time.Second, "subscribed", func() bool { return len(rec.ofType("subscribed")) == len(rooms) })
	return rec
}

func (r *frameLog) has(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, id := range ids {
		if r.events[id] {
			n++
		}
	}
	return n
}

func (r *frameLog) ofType(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, f := range r.frames {
		if f["type"] == typ {
			out = append(out, f)
		}
	}
	return out
}

// faultBrokers are the brokers the relay faces in these tests: Mosquitto,
// and the embedded (mochi) broker of another fleet-relay process.
var faultBrokers = map[string]func(t *testing.T) string{
	"mosquitto": func(t *testing.T) string { return brokertest.StartMosquitto(t).Addr() },
	"embedded": func(t *testing.T) string {
		host := startRelay(t) // its embedded broker serves the relay under test
		return host.mqttAddr
	},
}

// TestRelayCutLosesNothing: an 8 s cut of the relay's TCP path to the broker
// while a robot publishes 40 QoS 1 events. The broker acknowledged every
// event to the robot; all 40 must reach the dashboard client that stayed
// connected to the relay. (Before the relay's session was persistent, 0 of
// 40 arrived, with no notice.)
func TestRelayCutLosesNothing(t *testing.T) {
	for name, broker := range faultBrokers {
		t.Run(name, func(t *testing.T) {
			addr := broker(t)
			px := proxyTo(t, addr)
			relay := startRelayOn(t, "tcp://"+px.Addr(), "relay-under-test")
			dash := watchRooms(t, relay, "robot:r-1")
			rb := newPubRobot(t, "tcp://"+addr, "r-1")
			warm := rb.publish(2, 0)
			eventually(t, 10*time.Second, "events before the cut", func() bool { return dash.has(warm) == 2 })

			px.Cut()
			eventually(t, 10*time.Second, "the relay to see the cut", func() bool { return !relay.ready() })
			during := rb.publish(40, 200*time.Millisecond) // 8 s
			px.Restore()
			eventually(t, 30*time.Second, "the 40 events published during the cut", func() bool { return dash.has(during) == 40 })
			t.Logf("%s: %d of 40 events published during an 8 s cut reached the dashboard; proxy %+v",
				name, dash.has(during), px.Stats())
		})
	}
}

// statelessBrokers are brokers that lose the relay's session when they
// restart: Mosquitto without persistence, and the embedded broker (its
// relay process killed and started again). Each returns the broker's
// address and a restart function.
var statelessBrokers = map[string]func(t *testing.T) (string, func()){
	"mosquitto without persistence": func(t *testing.T) (string, func()) {
		ms := brokertest.StartMosquitto(t, brokertest.Options{Extra: "persistence false"})
		return ms.Addr(), func() { ms.Stop(); ms.Start() }
	},
	"embedded": func(t *testing.T) (string, func()) {
		host := &system{httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), mqttAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
		env := []string{"FLEET_RELAY_LISTEN=" + host.httpAddr, "FLEET_RELAY_MQTT_BROKER=",
			"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=" + host.mqttAddr, "FLEET_RELAY_AUTH_SECRET="}
		p := start(t, "fleet-relay", env)
		waitReady(t, host, 30*time.Second)
		return host.mqttAddr, func() {
			_ = p.cmd.Process.Kill() // kill -9: the broker's memory is gone
			_, _ = p.cmd.Process.Wait()
			p = start(t, "fleet-relay", env)
			waitReady(t, host, 30*time.Second)
		}
	},
}

// TestRelayBrokerLostStateTellsClients: the relay's path is cut while the
// robot publishes, and then the broker restarts without its state: the
// events it queued for the relay are gone. The relay learns it from the
// CONNACK (session present = false) and must say so: the dashboard gets a
// `gap` notice for the room, and a client resuming with since_seq gets
// recovered: false.
func TestRelayBrokerLostStateTellsClients(t *testing.T) {
	for name, broker := range statelessBrokers {
		t.Run(name, func(t *testing.T) {
			addr, restart := broker(t)
			px := proxyTo(t, addr)
			relay := startRelayOn(t, "tcp://"+px.Addr(), "relay-under-test")
			dash := watchRooms(t, relay, "robot:r-1")
			rb := newPubRobot(t, "tcp://"+addr, "r-1")
			warm := rb.publish(3, 0)
			eventually(t, 10*time.Second, "events before the fault", func() bool { return dash.has(warm) == 3 })
			lastSeq := rb.seq

			px.Cut()
			eventually(t, 10*time.Second, "the relay to see the cut", func() bool { return !relay.ready() })
			lost := rb.publish(5, 0) // queued by the broker for the relay's session...
			restart()                // ...and lost with the broker's state
			px.Restore()
			eventually(t, 30*time.Second, "the relay back", relay.ready)
			eventually(t, 15*time.Second, "a gap notice for robot:r-1", func() bool {
				for _, f := range dash.ofType("gap") {
					if f["room"] == "robot:r-1" {
						return true
					}
				}
				return false
			})
			if n := dash.has(lost); n != 0 {
				t.Logf("%d of the 5 events the broker lost still arrived", n)
			}

			// A client that was away resumes from the last event it had.
			c := dial(t, relay)
			c.send(map[string]any{"op": "subscribe", "room": "robot:r-1", "since_seq": lastSeq})
			f := c.waitFor(10*time.Second, "subscribed", func(f map[string]any) bool { return f["type"] == "subscribed" })
			if f["recovered"] != false {
				t.Fatalf("resume after the broker lost events: recovered = %v, want false", f["recovered"])
			}
		})
	}
}

// TestRelayFailsOverBetweenBrokers: FLEET_RELAY_MQTT_BROKER lists two
// brokers; killing the one in use moves the relay to the other, where the
// robot's next events reach the dashboard.
func TestRelayFailsOverBetweenBrokers(t *testing.T) {
	a := brokertest.StartMosquitto(t)
	b := brokertest.StartMosquitto(t)
	relay := startRelayOn(t, a.URL()+","+b.URL(), "relay-under-test")
	dash := watchRooms(t, relay, "robot:r-1")
	rb := newPubRobot(t, a.URL(), "r-1")
	ids := rb.publish(1, 0)
	eventually(t, 10*time.Second, "an event through broker a", func() bool { return dash.has(ids) == 1 })

	a.Stop() // SIGTERM; the relay's connection drops
	eventually(t, 10*time.Second, "the relay to lose broker a", func() bool { return !relay.ready() })
	eventually(t, 30*time.Second, "the relay on broker b", relay.ready)
	rb2 := newPubRobot(t, b.URL(), "r-1")
	rb2.seq = rb.seq
	ids = rb2.publish(1, 0)
	eventually(t, 10*time.Second, "an event through broker b", func() bool { return dash.has(ids) == 1 })
}

// TestRelayReconnectTiming measures how long after a broker restart the
// relay is ready again. FLEET_FAULT_BROKER_DOWN sets how long the broker
// stays down (default 3s; docs/BENCHMARKS.md quotes a 50s run). It asserts
// only that the relay comes back; the figure is logged.
func TestRelayReconnectTiming(t *testing.T) {
	down := 3 * time.Second
	if v := os.Getenv("FLEET_FAULT_BROKER_DOWN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FLEET_FAULT_BROKER_DOWN: %v", err)
		}
		down = d
	}
	ms := brokertest.StartMosquitto(t)
	relay := startRelayOn(t, ms.URL(), "relay-under-test")
	ms.Stop()
	eventually(t, 10*time.Second, "the relay to see the broker down", func() bool { return !relay.ready() })
	time.Sleep(down)
	ms.Start()
	up := time.Now()
	eventually(t, 60*time.Second, "the relay back after the broker restart", relay.ready)
	t.Logf("broker down %s: relay ready %s after the broker was back (/readyz polled every 50ms)",
		down, time.Since(up).Round(10*time.Millisecond))
}
