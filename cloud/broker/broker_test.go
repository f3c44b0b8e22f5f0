package broker_test

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

const wait = 5 * time.Second

var tp = protocol.MustTopics("")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startWith(t *testing.T, o broker.Options) *broker.Broker {
	t.Helper()
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = quiet()
	}
	b, err := broker.New(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func start(t *testing.T, users []broker.User) *broker.Broker {
	t.Helper()
	return startWith(t, broker.Options{Users: users})
}

// robots are the accounts most tests use.
var robots = []broker.User{
	{Username: "r-1", Password: "pw1"},
	{Username: "r-2", Password: "sha256:" + "93915a0a4bf8f634cb1856494dd4304472ad46b9827f541f76b6761c49cc55b0"}, // sha256("pw2")
	{Username: "eng", Password: "engpw", Admin: true},
}

// clientAs connects with client id id (robots: their username).
func clientAs(t *testing.T, url, id, user, pass string, opt ...func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(wait).
		SetProtocolVersion(4) // no retry as 3.1 after a refusal
	for _, f := range opt {
		f(o)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(wait))
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(10) })
	return c, nil
}

func client(t *testing.T, b *broker.Broker, user, pass string) (mqtt.Client, error) {
	t.Helper()
	return clientAs(t, b.URL(), user, user, pass)
}

func relayClient(t *testing.T, b *broker.Broker) mqtt.Client {
	t.Helper()
	user, pass := b.Credentials()
	c, err := clientAs(t, b.URL(), user+"-"+protocol.NewID()[20:], user, pass)
	require.NoError(t, err)
	return c
}

type msg struct {
	topic    string
	retained bool
	payload  string
}

type received struct{ ch chan msg }

func subscribe(t *testing.T, c mqtt.Client, filter string) (received, byte) {
	t.Helper()
	return sub(t, c, filter, false)
}

// subscribeLive keeps only live messages. mochi sends the retained
// messages of a new subscription after its SUBACK, so a message published
// just after the SUBACK may come both live and as retained.
func subscribeLive(t *testing.T, c mqtt.Client, filter string) (received, byte) {
	t.Helper()
	return sub(t, c, filter, true)
}

func sub(t *testing.T, c mqtt.Client, filter string, live bool) (received, byte) {
	t.Helper()
	r := received{ch: make(chan msg, 1000)}
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		if live && m.Retained() {
			return
		}
		r.ch <- msg{m.Topic(), m.Retained(), string(m.Payload())}
	})
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	return r, tok.(*mqtt.SubscribeToken).Result()[filter]
}

// drain collects what arrives until quiet for d.
func (r received) drain(d time.Duration) []msg {
	var out []msg
	for {
		select {
		case m := <-r.ch:
			out = append(out, m)
		case <-time.After(d):
			return out
		}
	}
}

func topicsOf(ms []msg) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.topic)
	}
	return out
}

// uniq is topicsOf without repeats: mochi may send a retained message twice
// to a subscription made while the message is being published.
func uniq(ms []msg) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, m := range ms {
		if !seen[m.topic] {
			seen[m.topic] = true
			out = append(out, m.topic)
		}
	}
	return out
}

func pub(t *testing.T, c mqtt.Client, topic string, qos byte, retained bool, payload ...string) {
	t.Helper()
	p := `{}`
	if len(payload) > 0 {
		p = payload[0]
	}
	tok := c.Publish(topic, qos, retained, []byte(p))
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
}

// marker publishes a message the relay must see, so that everything
// published before it on the same connection has been processed.
func marker(t *testing.T, c mqtt.Client, robot string, r received) []msg {
	t.Helper()
	pub(t, c, tp.Notifications(robot), 1, false, `"marker"`)
	var before []msg
	for {
		select {
		case m := <-r.ch:
			if m.topic == tp.Notifications(robot) && m.payload == `"marker"` {
				return before
			}
			before = append(before, m)
		case <-time.After(wait):
			t.Fatalf("marker from %s never arrived; got %v", robot, before)
		}
	}
}

// TestACL: robots publish only their own topics and read only their own
// commands; admins and the relay's own account see everything.
func TestACL(t *testing.T) {
	b := start(t, robots)
	relay := relayClient(t, b)
	all, code := subscribeLive(t, relay, tp.AllRobots())
	require.Equal(t, byte(1), code)

	_, err := client(t, b, "r-1", "wrong")
	require.Error(t, err, "bad password")
	_, err = client(t, b, "nobody", "x")
	require.Error(t, err, "unknown user")

	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	r2, err := client(t, b, "r-2", "pw2")
	require.NoError(t, err)
	eng, err := clientAs(t, b.URL(), "fleetctl-eng", "eng", "engpw")
	require.NoError(t, err)

	// Subscriptions: own commands only.
	cmds, code := subscribe(t, r1, tp.Commands("r-1"))
	require.Equal(t, byte(1), code)
	_, code = subscribe(t, r1, tp.Commands("r-2"))
	require.Equal(t, byte(0x80), code, "another robot's commands")
	_, code = subscribe(t, r1, tp.AllRobots())
	require.Equal(t, byte(0x80), code, "the whole tree")
	_, code = subscribe(t, r1, "$SYS/#")
	require.Equal(t, byte(0x80), code, "$SYS")
	_, code = subscribe(t, eng, tp.AllRobots())
	require.Equal(t, byte(1), code, "admin")

	// Publishing: own topics only, never commands.
	// (QoS 0: a refused QoS 1 publish disconnects an MQTT 3.1.1 client,
	// which has no negative PUBACK; see TestRefusedQoS1Disconnects.)
	pub(t, r1, tp.Status("r-1"), 1, true)
	pub(t, r1, tp.SessionEvents("r-1", "s-1"), 1, false)
	pub(t, r1, tp.Status("r-2"), 0, false)      // dropped
	pub(t, r1, tp.Commands("r-1"), 0, false)    // dropped: robots do not command
	pub(t, r1, "fleet/v1/robots/r-1", 0, false) // dropped: not a §3 topic
	pub(t, r2, tp.Status("r-2"), 1, true)
	pub(t, relay, tp.Commands("r-1"), 1, false)
	got := map[string]int{}
	for _, m := range marker(t, r1, "r-1", all) {
		got[m.topic]++
	}
	for _, m := range marker(t, r2, "r-2", all) {
		got[m.topic]++
	}
	// The broker keeps each publisher's order, not the order between
	// publishers: the relay's command is known to be in only before the
	// relay's own marker.
	for _, m := range marker(t, relay, "r-1", all) {
		got[m.topic]++
	}
	require.Equal(t, map[string]int{tp.Status("r-1"): 1, tp.SessionEvents("r-1", "s-1"): 1, tp.Status("r-2"): 1, tp.Commands("r-1"): 1}, got)
	select {
	case m := <-cmds.ch:
		require.Equal(t, tp.Commands("r-1"), m.topic)
	case <-time.After(wait):
		t.Fatal("r-1 did not get its command")
	}
}

// TestRefusedQoS1Disconnects: a robot publishing QoS 1 outside its topics
// is disconnected.
func TestRefusedQoS1Disconnects(t *testing.T) {
	b := start(t, robots)
	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	tok := r1.Publish(tp.Status("r-2"), 1, false, []byte(`{}`))
	require.True(t, tok.WaitTimeout(wait))
	require.Error(t, tok.Error())
}

// TestTopicShapes is attack 3: a robot may publish exactly the §3 topics
// of its own robot, retained only where §3 retains; junk under its own
// prefix, retained or not, reaches no one and is not kept.
func TestTopicShapes(t *testing.T) {
	b := start(t, robots)
	relay := relayClient(t, b)
	all, _ := subscribeLive(t, relay, tp.AllRobots())
	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)

	refused := []struct {
		topic  string
		retain bool
	}{
		{"fleet/v1/robots/r-1/junk", false},
		{"fleet/v1/robots/r-1/junk/a/b", true},
		{"fleet/v1/robots/r-1/status/extra", true},
		{"fleet/v1/robots/r-1/sessions/s-1", false},
		{"fleet/v1/robots/r-1/sessions/s-1/junk", true},
		{"fleet/v1/robots/r-1/sessions/s-1/events/x", false},
		{"fleet/v1/robots/r-1/sessions/bad id/state", true},
		{"fleet/v1/robots/r-1/", false},
		{"fleet/v2/robots/r-1/status", true},
		{"other/r-1", true},
		{tp.Alerts("r-1"), true},             // alerts are not retained
		{tp.Replies("r-1"), true},            // nor replies
		{tp.Notifications("r-1"), true},      // nor notifications
		{tp.SessionEvents("r-1", "s"), true}, // nor session events
	}
	for _, r := range refused {
		pub(t, r1, r.topic, 0, r.retain)
	}
	allowed := []struct {
		topic  string
		retain bool
	}{
		{tp.Status("r-1"), true},
		{tp.Metrics("r-1"), true},
		{tp.Alerts("r-1"), false},
		{tp.Replies("r-1"), false},
		{tp.SessionEvents("r-1", "s-1"), false},
		{tp.SessionState("r-1", "s-1"), true},
	}
	for _, a := range allowed {
		pub(t, r1, a.topic, 1, a.retain)
	}
	want := []string{}
	for _, a := range allowed {
		want = append(want, a.topic)
	}
	require.Equal(t, want, topicsOf(marker(t, r1, "r-1", all)))

	// A late subscriber sees exactly the retained §3 topics.
	eng, err := clientAs(t, b.URL(), "eng-late", "eng", "engpw")
	require.NoError(t, err)
	late, _ := subscribe(t, eng, "#")
	require.ElementsMatch(t, []string{tp.Status("r-1"), tp.Metrics("r-1"), tp.SessionState("r-1", "s-1")},
		uniq(late.drain(500*time.Millisecond)))
}

// TestWillChecked is attack 1: mochi publishes a Will without an ACL
// check, so a robot's CONNECT with a Will on another robot's commands or
// status, or on a topic it may not retain, is refused ("not authorized")
// and dropping the connection publishes nothing. Its own status Will works.
func TestWillChecked(t *testing.T) {
	b := start(t, robots)
	relay := relayClient(t, b)
	all, _ := subscribeLive(t, relay, tp.AllRobots())
	for _, w := range []struct {
		topic  string
		qos    byte
		retain bool
	}{
		{tp.Commands("r-2"), 1, false},
		{tp.Commands("r-2"), 1, true},
		{tp.Status("r-2"), 1, true},
		{tp.Commands("r-1"), 1, true},
		{tp.Alerts("r-1"), 1, false},
		{"fleet/v1/robots/r-1/junk", 0, true},
		{tp.Status("r-1"), 2, true}, // QoS 2 is not §3's
	} {
		conn, code, err := brokertest.RawConnect(b.Addr(), brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: "pw1",
			WillTopic: w.topic, WillPayload: []byte(`{"name":"start_session"}`), WillQoS: w.qos, WillRetain: w.retain})
		require.NoError(t, err, w.topic)
		require.Equal(t, brokertest.ConnNotAuthorized, code, "will on %s", w.topic)
		conn.Close()
	}
	// The robot's own status Will is published when it drops.
	conn, code, err := brokertest.RawConnect(b.Addr(), brokertest.Connect{ClientID: "r-1", Username: "r-1", Password: "pw1",
		WillTopic: tp.Status("r-1"), WillPayload: []byte(`offline`), WillQoS: 1, WillRetain: true})
	require.NoError(t, err)
	require.Equal(t, brokertest.ConnAccepted, code)
	conn.Close()
	select {
	case m := <-all.ch:
		require.Equal(t, msg{tp.Status("r-1"), false, "offline"}, m, "only the robot's own Will")
	case <-time.After(wait):
		t.Fatal("the robot's own status Will was not published")
	}
	require.Empty(t, all.drain(300*time.Millisecond))
}

// TestClientIDBound is attack 2: r-1's credentials with client id r-2 (or
// any id but its own) are refused, and the connected r-2 stays connected
// with its Will unfired.
func TestClientIDBound(t *testing.T) {
	b := start(t, robots)
	relay := relayClient(t, b)
	all, _ := subscribeLive(t, relay, tp.AllRobots())
	r2, err := clientAs(t, b.URL(), "r-2", "r-2", "pw2", func(o *mqtt.ClientOptions) {
		o.SetWill(tp.Status("r-2"), "offline", 1, true)
	})
	require.NoError(t, err)
	for _, id := range []string{"r-2", "r-1-x", "r-10", "fleetctl", "eng"} {
		conn, code, err := brokertest.RawConnect(b.Addr(), brokertest.Connect{ClientID: id, Username: "r-1", Password: "pw1"})
		require.NoError(t, err, id)
		require.Equal(t, brokertest.ConnNotAuthorized, code, "r-1 as client id %q", id)
		conn.Close()
	}
	// An admin may use other client ids, but not take over a robot's session.
	conn, code, err := brokertest.RawConnect(b.Addr(), brokertest.Connect{ClientID: "r-2", Username: "eng", Password: "engpw"})
	require.NoError(t, err)
	require.Equal(t, brokertest.ConnNotAuthorized, code, "admin taking over r-2's session")
	conn.Close()
	require.True(t, r2.IsConnectionOpen())
	require.Empty(t, marker(t, r2, "r-2", all), "r-2's Will must not fire")
}

// TestMaxPacketSize is attack 4: a publish larger than the limit closes
// the connection before the broker holds it; the spec's largest payload
// (256 KiB) passes.
func TestMaxPacketSize(t *testing.T) {
	b := start(t, robots)
	relay := relayClient(t, b)
	all, _ := subscribeLive(t, relay, tp.AllRobots())
	lost := make(chan struct{})
	r1, err := clientAs(t, b.URL(), "r-1", "r-1", "pw1", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(mqtt.Client, error) { close(lost) })
	})
	require.NoError(t, err)
	pub(t, r1, tp.Status("r-1"), 1, true, `"`+strings.Repeat("a", 256<<10-2)+`"`)
	ms := marker(t, r1, "r-1", all)
	require.Len(t, ms, 1)
	require.Len(t, ms[0].payload, 256<<10)
	r1.Publish(tp.Status("r-1"), 0, true, bytes.Repeat([]byte("a"), 300<<10))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("a 300 KiB publish did not close the connection")
	}
	require.Empty(t, all.drain(300*time.Millisecond))
}

// TestRetainedCaps is attack 4: a robot's retained messages are capped
// (its oldest session states go first, status stays) and so is the total
// (past it messages are delivered but not kept).
func TestRetainedCaps(t *testing.T) {
	b := startWith(t, broker.Options{Users: robots, Limits: broker.Limits{RetainedPerRobot: 4, RetainedTotal: 6}})
	r1, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	pub(t, r1, tp.Status("r-1"), 1, true)
	for i := range 10 {
		pub(t, r1, tp.SessionState("r-1", "s-"+string(rune('a'+i))), 1, true)
	}
	eng, err := clientAs(t, b.URL(), "eng-1", "eng", "engpw")
	require.NoError(t, err)
	got, _ := subscribe(t, eng, "#")
	require.ElementsMatch(t, []string{tp.Status("r-1"), tp.SessionState("r-1", "s-h"), tp.SessionState("r-1", "s-i"),
		tp.SessionState("r-1", "s-j")}, uniq(got.drain(500*time.Millisecond)))
	require.EqualValues(t, 7, b.Stats().RetainedEvicted.Load())

	// Total 6: r-2 may add two; the third is delivered live, not kept.
	r2, err := client(t, b, "r-2", "pw2")
	require.NoError(t, err)
	pub(t, r2, tp.Status("r-2"), 1, true)
	pub(t, r2, tp.Metrics("r-2"), 0, true)
	pub(t, r2, tp.SessionState("r-2", "s-1"), 1, true)
	live := got.drain(500 * time.Millisecond)
	require.Equal(t, []string{tp.Status("r-2"), tp.Metrics("r-2"), tp.SessionState("r-2", "s-1")}, uniq(live))
	require.EqualValues(t, 1, b.Stats().RetainedRefused.Load())
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.Collectors()...)
	require.Equal(t, 6.0, gaugeValue(t, reg, "fleet_relay_embedded_broker_retained_messages"))
	eng2, err := clientAs(t, b.URL(), "eng-2", "eng", "engpw")
	require.NoError(t, err)
	late, _ := subscribe(t, eng2, "fleet/v1/robots/r-2/#")
	require.ElementsMatch(t, []string{tp.Status("r-2"), tp.Metrics("r-2")}, uniq(late.drain(500*time.Millisecond)))
}

// TestSessionExpiry is attack 4: a disconnected persistent session of a
// non-relay account is dropped after SessionExpiry; the relay's own lives
// for RelaySessionExpiry.
func TestSessionExpiry(t *testing.T) {
	b := startWith(t, broker.Options{Users: robots, Limits: broker.Limits{SessionExpiry: time.Second}})
	persistent := func(o *mqtt.ClientOptions) { o.SetCleanSession(false) }
	connect := func(id, user, pass string) (mqtt.Client, bool) {
		o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetUsername(user).SetPassword(pass).
			SetAutoReconnect(false).SetConnectTimeout(wait)
		persistent(o)
		c := mqtt.NewClient(o)
		tok := c.Connect()
		require.True(t, tok.WaitTimeout(wait))
		require.NoError(t, tok.Error())
		return c, tok.(*mqtt.ConnectToken).SessionPresent()
	}
	user, pass := b.Credentials()
	eng, present := connect("eng-p", "eng", "engpw")
	require.False(t, present)
	relay, present := connect("relay-p", user, pass)
	require.False(t, present)
	eng.Disconnect(10)
	relay.Disconnect(10)
	require.Eventually(t, func() bool { return b.Stats().SessionsExpired.Load() == 1 }, wait, 50*time.Millisecond)
	eng, present = connect("eng-p", "eng", "engpw")
	require.False(t, present, "the admin's session expired")
	eng.Disconnect(10)
	relay, present = connect("relay-p", user, pass)
	require.True(t, present, "the relay's session outlives SessionExpiry")
	relay.Disconnect(10)
}

// TestAnonymousLoopbackOnly is attack 5: with no users, anonymous clients
// get full access, so every listener must be on loopback unless named in
// InsecureAnonymous.
func TestAnonymousLoopbackOnly(t *testing.T) {
	b := start(t, nil)
	c, err := clientAs(t, b.URL(), "anyone", "", "")
	require.NoError(t, err)
	_, code := subscribe(t, c, "fleet/v1/robots/#")
	require.Equal(t, byte(1), code)

	for _, o := range []broker.Options{
		{Listen: "0.0.0.0:0"},
		{Listen: ":0"},
		{Listen: "127.0.0.1:0", WSListen: "0.0.0.0:0"},
		{Listen: "127.0.0.1:0", WSListen: "0.0.0.0:0", InsecureAnonymous: []string{"tcp"}},
	} {
		o.Logger = quiet()
		_, err := broker.New(o)
		require.ErrorIs(t, err, broker.ErrConfig, "%+v", o)
		require.ErrorContains(t, err, "anonymous")
	}
	startWith(t, broker.Options{Listen: "0.0.0.0:0", InsecureAnonymous: []string{"tcp"}})
	startWith(t, broker.Options{Listen: "0.0.0.0:0", Users: robots})
}

// TestListenOnlyWhereConfigured: a second broker cannot take a bound port.
func TestListenOnlyWhereConfigured(t *testing.T) {
	b := start(t, nil)
	_, err := broker.New(broker.Options{Listen: b.Addr(), Logger: quiet()})
	require.ErrorIs(t, err, broker.ErrListen)
}

// TestPlainPasswordWarns: plain and unsalted passwords still work, with a
// warning naming the account.
func TestPlainPasswordWarns(t *testing.T) {
	var buf safeBuffer
	b := startWith(t, broker.Options{Users: robots, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	_, err := client(t, b, "r-1", "pw1")
	require.NoError(t, err)
	out := buf.String()
	require.Contains(t, out, "username=r-1 format=plain")
	require.Contains(t, out, "username=r-2 format=sha256")
	require.Contains(t, out, "fleet-relay passwd")
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestMaxInflight is attack 4: messages queued for a disconnected
// persistent session are capped by MaxInflight; the rest are dropped and
// counted.
func TestMaxInflight(t *testing.T) {
	b := startWith(t, broker.Options{Users: robots, Limits: broker.Limits{MaxInflight: 3}})
	got := make(chan string, 100)
	persistent := func(o *mqtt.ClientOptions) {
		o.SetCleanSession(false).SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
	}
	eng, err := clientAs(t, b.URL(), "eng-q", "eng", "engpw", persistent)
	require.NoError(t, err)
	tok := eng.Subscribe(tp.Commands("r-1"), 1, nil)
	require.True(t, tok.WaitTimeout(wait))
	require.NoError(t, tok.Error())
	eng.Disconnect(10)
	reg := prometheus.NewRegistry()
	reg.MustRegister(b.Collectors()...)
	require.Eventually(t, func() bool { return gaugeValue(t, reg, "fleet_relay_embedded_broker_clients_connected") == 0 },
		wait, 10*time.Millisecond, "the broker saw eng-q disconnect")
	relay := relayClient(t, b)
	for i := range 10 {
		pub(t, relay, tp.Commands("r-1"), 1, false, strings.Repeat("x", i+1))
	}
	// The broker acknowledges before it delivers: wait until all ten were
	// stored or dropped.
	require.Eventually(t, func() bool { return counterValue(t, reg, "fleet_relay_embedded_broker_inflight_dropped_total") == 7 },
		wait, 10*time.Millisecond, "7 of 10 dropped")
	_, err = clientAs(t, b.URL(), "eng-q", "eng", "engpw", persistent)
	require.NoError(t, err)
	var queued []string
	for len(queued) < 3 {
		select {
		case p := <-got:
			queued = append(queued, p)
		case <-time.After(wait):
			t.Fatalf("got %v of the queued messages", queued)
		}
	}
	require.ElementsMatch(t, []string{"x", "xx", "xxx"}, queued)
	select {
	case p := <-got:
		t.Fatalf("a fourth queued message arrived: %q", p)
	case <-time.After(300 * time.Millisecond):
	}
}
