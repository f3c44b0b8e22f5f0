package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

var secTopics = protocol.MustTopics("")

// Accounts of the broker attack tests. r-1's credentials are the stolen
// ones; r-2 is the victim, a real robot-agent; engineer and fleet-relay
// read everything and send commands (on Mosquitto, fleet.acl's two
// accounts; on the embedded broker, admin users).
var secPasswords = map[string]string{
	"r-1": "r1-field-credential-7c1e", "r-2": "r2-field-credential-93ad",
	"engineer": "engineer-pw-5b20", "fleet-relay": "relay-pw-0e77",
}

// attackerAddr is the local address attack connections come from, so that
// their failed logins are throttled apart from the agents and observers on
// 127.0.0.1.
const attackerAddr = "127.0.0.9"

// brokerTarget is a broker under attack: the relay's embedded broker or
// Mosquitto with the shipped config.
type brokerTarget struct {
	name     string
	addr     string // MQTT over TCP, host:port
	wsAddr   string // MQTT over WebSocket (embedded only)
	embedded bool
	cfgFile  string // the relay's config (embedded only)
}

func (b *brokerTarget) url() string { return "tcp://" + b.addr }

// hashPassword runs the real `fleet-relay passwd`; with file set it adds
// user's line there, otherwise it returns the hash.
func hashPassword(t *testing.T, user, file string) string {
	t.Helper()
	args := []string{"passwd", user}
	if file != "" {
		args = []string{"passwd", "--file", file, user}
	}
	cmd := exec.Command(filepath.Join(binDir, "fleet-relay"), args...)
	cmd.Stdin = strings.NewReader(secPasswords[user] + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fleet-relay passwd %s: %v", user, err)
	}
	return strings.TrimSpace(string(out))
}

// startEmbeddedTarget starts fleet-relay with robot accounts r-1 and r-2 in
// a password file and two admin accounts, all hashed by `fleet-relay passwd`.
func startEmbeddedTarget(t *testing.T) *brokerTarget {
	t.Helper()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "fleet.passwd")
	hashPassword(t, "r-1", passwd)
	hashPassword(t, "r-2", passwd)
	b := &brokerTarget{name: "embedded", embedded: true,
		addr:   "127.0.0.1:" + strconv.Itoa(freePort(t)),
		wsAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := fmt.Sprintf(`listen: %s
embedded_mqtt:
  listen: %s
  ws_listen: %s
  password_file: %s
  users:
    - {username: engineer, password: %q, admin: true}
    - {username: fleet-relay, password: %q, admin: true}
`, httpAddr, b.addr, b.wsAddr, passwd, hashPassword(t, "engineer", ""), hashPassword(t, "fleet-relay", ""))
	b.cfgFile = filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(b.cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "fleet-relay", []string{"FLEET_RELAY_MQTT_BROKER=", "FLEET_RELAY_AUTH_SECRET=", "FLEET_RELAY_LISTEN=",
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN="}, "--config", b.cfgFile)
	eventually(t, 20*time.Second, "relay /readyz 200", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return b
}

// startMosquittoTarget starts Mosquitto with configs/mosquitto as shipped,
// its password file written by `fleet-relay passwd` (PBKDF2 $7$).
func startMosquittoTarget(t *testing.T) *brokerTarget {
	t.Helper()
	passwd := filepath.Join(t.TempDir(), "fleet.passwd")
	for _, u := range []string{"r-1", "r-2", "engineer", "fleet-relay"} {
		hashPassword(t, u, passwd)
	}
	m := brokertest.StartMosquitto(t, brokertest.Shipped(t, passwd))
	return &brokerTarget{name: "mosquitto", addr: m.Addr()}
}

// startVictim runs the real robot-agent r-2 with its own credentials.
func startVictim(t *testing.T, b *brokerTarget) {
	t.Helper()
	start(t, "robot-agent", []string{
		"ROBOT_AGENT_ROBOT_ID=r-2",
		"ROBOT_AGENT_MQTT_BROKER=" + b.url(),
		"ROBOT_AGENT_MQTT_USERNAME=r-2",
		"ROBOT_AGENT_MQTT_PASSWORD=" + secPasswords["r-2"],
		"ROBOT_AGENT_STATE_DIR=" + t.TempDir(),
		"ROBOT_AGENT_MODEL_DIRS=" + t.TempDir(),
		"ROBOT_AGENT_METRICS_INTERVAL=1h",
	}, "run")
}

// mqttMsg is one message an observer saw.
type mqttMsg struct {
	Topic    string
	Retained bool
	Payload  []byte
}

// event decodes the message, or returns nil.
func (m mqttMsg) event() *protocol.Event {
	ev, err := protocol.Decode(m.Payload)
	if err != nil {
		return nil
	}
	return ev
}

// observer is an admin MQTT client subscribed to every robot topic.
type observer struct {
	c  paho.Client
	mu sync.Mutex
	ms []mqttMsg // guarded by mu
}

// mqttConnect connects a paho client (MQTT 3.1.1) or fails the test.
func mqttConnect(t *testing.T, b *brokerTarget, user string, opt ...func(*paho.ClientOptions)) paho.Client {
	t.Helper()
	c, err := mqttTry(t, b, user, secPasswords[user], opt...)
	if err != nil {
		t.Fatalf("%s: connect as %s: %v", b.name, user, err)
	}
	return c
}

func mqttTry(t *testing.T, b *brokerTarget, user, pass string, opt ...func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(b.url()).SetClientID(user).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4)
	for _, f := range opt {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func newObserver(t *testing.T, b *brokerTarget) *observer {
	t.Helper()
	o := &observer{c: mqttConnect(t, b, "engineer")}
	tok := o.c.Subscribe(secTopics.AllRobots(), 1, func(_ paho.Client, m paho.Message) {
		o.mu.Lock()
		o.ms = append(o.ms, mqttMsg{m.Topic(), m.Retained(), append([]byte(nil), m.Payload()...)})
		o.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	return o
}

// mark returns a position in what the observer saw.
func (o *observer) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.ms)
}

// since returns what the observer saw from position i on.
func (o *observer) since(i int) []mqttMsg {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]mqttMsg(nil), o.ms[i:]...)
}

// waitFor waits until a message from position i on matches.
func (o *observer) waitFor(t *testing.T, i int, what string, match func(mqttMsg) bool) mqttMsg {
	t.Helper()
	var found mqttMsg
	eventually(t, 20*time.Second, what, func() bool {
		for _, m := range o.since(i) {
			if match(m) {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// command publishes a command envelope to robot and returns its id.
func commandTo(t *testing.T, c paho.Client, robot, name string) string {
	t.Helper()
	raw, id := commandPayload(t, robot, name)
	tok := c.Publish(secTopics.Commands(robot), 1, false, raw)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish command: %v", tok.Error())
	}
	return id
}

func commandPayload(t *testing.T, robot, name string) ([]byte, string) {
	t.Helper()
	ev := protocol.NewEvent(robot, &protocol.Command{Name: name, Args: map[string]any{}})
	raw, err := protocol.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	return raw, ev.ID
}

// replyTo reports whether m is robot's command.reply to command id.
func replyTo(m mqttMsg, robot, id string) bool {
	if m.Topic != secTopics.Replies(robot) {
		return false
	}
	ev := m.event()
	if ev == nil {
		return false
	}
	r, ok := ev.Data.(protocol.CommandReply)
	return ok && r.CommandID == id
}

// pingVictim sends r-2 a ping as the observer and waits for the reply: every
// command published to r-2 before it has then been handled.
func (o *observer) pingVictim(t *testing.T) {
	t.Helper()
	i := o.mark()
	id := commandTo(t, o.c, "r-2", "ping")
	o.waitFor(t, i, "r-2's reply to ping "+id, func(m mqttMsg) bool { return replyTo(m, "r-2", id) })
}

// statusState returns the state of a robot.status message, or "".
func statusState(m mqttMsg) string {
	ev := m.event()
	if ev == nil {
		return ""
	}
	if st, ok := ev.Data.(protocol.RobotStatus); ok {
		return st.State
	}
	return ""
}

// retained returns the retained messages under filter, as a new subscriber
// (account fleet-relay) gets them.
func retained(t *testing.T, b *brokerTarget, filter string) map[string]mqttMsg {
	t.Helper()
	c := mqttConnect(t, b, "fleet-relay")
	defer c.Disconnect(50)
	var mu sync.Mutex
	out := map[string]mqttMsg{}
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			mu.Lock()
			out[m.Topic()] = mqttMsg{m.Topic(), true, append([]byte(nil), m.Payload()...)}
			mu.Unlock()
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	time.Sleep(500 * time.Millisecond) // retained messages follow the SUBACK; there is no end marker
	mu.Lock()
	defer mu.Unlock()
	return out
}
