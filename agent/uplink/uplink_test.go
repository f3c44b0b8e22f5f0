package uplink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/agent/uplink"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var topics = protocol.Topics{}

const robot = "r-up"

// recorder is an MQTT subscriber that keeps what it received.
type recorder struct {
	mu   sync.Mutex
	msgs []mqtt.Message
	c    mqtt.Client
}

// subscribe connects a subscriber. persistent keeps its session and QoS 1
// messages across its own and the broker's restarts (Mosquitto).
func subscribe(t *testing.T, url, clientID string, persistent bool, filter string) *recorder {
	t.Helper()
	r := &recorder{}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(!persistent).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetOrderMatters(true).SetResumeSubs(true)
	o.SetOnConnectHandler(func(c mqtt.Client) {
		c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
			r.mu.Lock()
			r.msgs = append(r.msgs, m)
			r.mu.Unlock()
		})
	})
	r.c = mqtt.NewClient(o)
	tok := r.c.Connect()
	require.True(t, tok.WaitTimeout(10*time.Second))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r
}

func (r *recorder) snapshot() []mqtt.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]mqtt.Message(nil), r.msgs...)
}

func (r *recorder) events(t *testing.T) []*protocol.Event {
	t.Helper()
	var out []*protocol.Event
	for _, m := range r.snapshot() {
		if len(m.Payload()) == 0 {
			continue
		}
		ev, err := protocol.Decode(m.Payload())
		require.NoError(t, err)
		out = append(out, ev)
	}
	return out
}

func status(state, reason string) func(int64) []byte {
	return func(int64) []byte {
		ev := protocol.NewEvent(robot, protocol.RobotStatus{State: state, Reason: reason, AgentVersion: "test", StartedAt: protocol.Now()})
		b, err := protocol.Encode(ev)
		if err != nil {
			panic(err)
		}
		return b
	}
}

type harness struct {
	out    *spool.Outbox
	up     *uplink.Uplink
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, url string, subs ...uplink.Subscription) *harness {
	t.Helper()
	return startOpts(t, uplink.Options{Brokers: []string{url}, Subscriptions: subs, Window: 8, BackoffMax: 200 * time.Millisecond})
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		require.NoError(t, err)
		h.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("uplink did not stop")
	}
}

func note(i int) *protocol.Event {
	return protocol.NewEvent(robot, protocol.RobotNotification{Level: "info", Title: fmt.Sprintf("n%d", i)})
}

func TestStatusOnlineThenOfflineShutdown(t *testing.T) {
	b := brokertest.StartMochi(t)
	h := start(t, b.URL())
	sub := subscribe(t, b.URL(), "watch", false, topics.Status(robot))
	require.Eventually(t, func() bool {
		evs := sub.events(t)
		return len(evs) > 0 && evs[len(evs)-1].Data.(protocol.RobotStatus).State == "online"
	}, 10*time.Second, 20*time.Millisecond)
	require.True(t, sub.snapshot()[0].Retained() || len(sub.snapshot()) > 0)
	h.stop(t)
	require.Eventually(t, func() bool {
		evs := sub.events(t)
		st := evs[len(evs)-1].Data.(protocol.RobotStatus)
		return st.State == "offline" && st.Reason == "shutdown"
	}, 10*time.Second, 20*time.Millisecond)
	// A new subscriber sees the retained offline status.
	late := subscribe(t, b.URL(), "late", false, topics.Status(robot))
	require.Eventually(t, func() bool { return len(late.snapshot()) == 1 }, 5*time.Second, 20*time.Millisecond)
	require.True(t, late.snapshot()[0].Retained())
	require.Equal(t, "shutdown", late.events(t)[0].Data.(protocol.RobotStatus).Reason)
}

func TestBootWithoutBrokerThenConnect(t *testing.T) {
	m := brokertest.StartMosquitto(t)
	m.Stop()
	h := start(t, m.URL())
	require.NoError(t, h.out.Emit(note(1))) // produced while there is no broker
	require.Never(t, h.up.Connected, 300*time.Millisecond, 20*time.Millisecond)
	require.False(t, h.up.Connected())
	require.NotEmpty(t, h.up.Stats().LastConnectErr)
	require.ErrorIs(t, h.up.PublishDirect(topics.Metrics(robot), 0, true, []byte("{}")), uplink.ErrNotConnected)
	require.EqualValues(t, 1, h.up.Stats().DirectDropped)
	m.Start()
	require.Eventually(t, h.up.Connected, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return h.out.Stats().Depth == 0 }, 10*time.Second, 20*time.Millisecond)
}

// The broker restarts while events are produced: every event arrives
// afterwards, in seq order, none lost, and the spool ends empty.
func TestBrokerRestartMidStreamLosesNothing(t *testing.T) {
	// "user root": as root, Mosquitto otherwise drops to user mosquitto and
	// cannot write its persistence file into the test's private temp dir.
	m := brokertest.StartMosquitto(t, brokertest.Options{Extra: "user root"})
	cmds := make(chan string, 10)
	h := start(t, m.URL(), uplink.Subscription{Topic: topics.Commands(robot), QoS: 1, Handler: func(_ string, p []byte, _ bool) {
		select {
		case cmds <- string(p):
		default:
		}
	}})
	sub := subscribe(t, m.URL(), "relay-sim", true, topics.Notifications(robot))
	require.Eventually(t, h.up.Connected, 10*time.Second, 20*time.Millisecond)

	var ids []string
	emit := func(n int) {
		for range n {
			ev := note(len(ids))
			require.NoError(t, h.out.Emit(ev))
			ids = append(ids, ev.ID)
		}
	}
	emit(50)
	m.Stop()
	require.Eventually(t, func() bool { return !h.up.Connected() }, 10*time.Second, 10*time.Millisecond)
	emit(100) // produced while the broker is down
	require.EqualValues(t, h.out.Stats().Depth >= 100, true)
	m.Start()
	emit(50)
	require.Eventually(t, func() bool { return h.out.Stats().Depth == 0 }, 20*time.Second, 20*time.Millisecond)
	if !assert.Eventually(t, func() bool { return len(uniq(sub.events(t))) == len(ids) }, 20*time.Second, 20*time.Millisecond, "got %d of %d; first %v", len(uniq(sub.events(t))), len(ids), firstSeqs(sub.events(t))) {
		t.Fatal(m.Log())
	}

	got := uniq(sub.events(t))
	var lastSeq int64
	for i, ev := range got {
		require.Equal(t, ids[i], ev.ID, "event %d out of order or lost", i)
		require.Greater(t, ev.Seq, lastSeq)
		lastSeq = ev.Seq
	}
	// Subscriptions are made again on the new connection.
	pub := subscribe(t, m.URL(), "cmd-sender", false, "nothing/here")
	pub.c.Publish(topics.Commands(robot), 1, false, "hello").Wait()
	select {
	case p := <-cmds:
		require.Equal(t, "hello", p)
	case <-time.After(10 * time.Second):
		t.Fatal("command not received after reconnect")
	}
	require.GreaterOrEqual(t, h.up.Stats().Connects, int64(2))
}

// uniq keeps the first delivery of each event id (QoS 1 may deliver twice).
func uniq(evs []*protocol.Event) []*protocol.Event {
	seen := map[string]bool{}
	var out []*protocol.Event
	for _, ev := range evs {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			out = append(out, ev)
		}
	}
	return out
}

func TestRetainedClearAndDirectPublish(t *testing.T) {
	b := brokertest.StartMochi(t)
	h := start(t, b.URL())
	require.Eventually(t, h.up.Connected, 10*time.Second, 20*time.Millisecond)
	stateTopic := topics.SessionState(robot, "s-1")
	require.NoError(t, h.up.PublishDirect(topics.Metrics(robot), 0, true, []byte(`{"x":1}`)))
	st := protocol.NewSessionEvent(robot, "s-1", protocol.SessionState{Status: "queued", Pipeline: "p", Model: "m", CreatedAt: protocol.Now()})
	require.NoError(t, h.out.Emit(st))
	require.Eventually(t, func() bool { return h.out.Stats().Depth == 0 }, 10*time.Second, 20*time.Millisecond)
	sub := subscribe(t, b.URL(), "w1", false, "fleet/v1/robots/"+robot+"/#")
	require.Eventually(t, func() bool { return len(sub.snapshot()) >= 3 }, 5*time.Second, 20*time.Millisecond) // status, metrics, state
	require.NoError(t, h.out.ClearRetained(stateTopic))
	require.Eventually(t, func() bool { return h.out.Stats().Depth == 0 }, 10*time.Second, 20*time.Millisecond)
	sub2 := subscribe(t, b.URL(), "w2", false, stateTopic)
	require.Never(t, func() bool { return len(sub2.snapshot()) > 0 }, 300*time.Millisecond, 20*time.Millisecond)
}

func firstSeqs(evs []*protocol.Event) []int64 {
	var s []int64
	for _, ev := range evs {
		s = append(s, ev.Seq)
	}
	return s
}

func TestWebSocketBroker(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{WebSockets: true})
	h := start(t, fmt.Sprintf("ws://127.0.0.1:%d", m.WSPort))
	sub := subscribe(t, m.URL(), "ws-watch", false, topics.Notifications(robot))
	require.Eventually(t, h.up.Connected, 10*time.Second, 20*time.Millisecond)
	ev := note(1)
	require.NoError(t, h.out.Emit(ev))
	require.Eventually(t, func() bool { evs := sub.events(t); return len(evs) == 1 && evs[0].ID == ev.ID }, 10*time.Second, 20*time.Millisecond)
}

// Mutual TLS: the broker requires a client certificate signed by its CA;
// the uplink verifies the broker against a CA file and a server name.
func TestMutualTLSBroker(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := makeCert(t, dir, "ca", nil, nil, "")
	makeCert(t, dir, "server", ca, caKey, "broker.test")
	makeCert(t, dir, "client", ca, caKey, "")
	port := brokertest.FreePort(t)
	// "user root": as root, Mosquitto otherwise drops to user mosquitto,
	// which cannot read the keys in the test's private temp dir.
	m := brokertest.StartMosquitto(t, brokertest.Options{Extra: fmt.Sprintf("user root\n"+
		"listener %d 127.0.0.1\ncafile %s/ca.pem\ncertfile %s/server.pem\nkeyfile %s/server.key\nrequire_certificate true\n", port, dir, dir, dir)})
	out, err := spool.Open(spool.Options{Path: filepath.Join(t.TempDir(), "spool.db")})
	require.NoError(t, err)
	defer out.Close()
	opts := uplink.Options{
		Brokers: []string{fmt.Sprintf("ssl://127.0.0.1:%d", port)}, ClientID: robot, StatusTopic: topics.Status(robot),
		Will: status("offline", "lost"), Online: status("online", ""), Offline: status("offline", "shutdown"),
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		TLS: uplink.TLS{CAFile: dir + "/ca.pem", CertFile: dir + "/client.pem", KeyFile: dir + "/client.key", ServerName: "broker.test"},
	}
	up, err := uplink.New(opts, out)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- up.Run(ctx) }()
	require.Eventually(t, up.Connected, 10*time.Second, 20*time.Millisecond)
	sub := subscribe(t, m.URL(), "tls-watch", false, topics.Status(robot))
	require.Eventually(t, func() bool { return len(sub.events(t)) == 1 }, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)

	// Without the client certificate the broker refuses the connection.
	opts.TLS.CertFile, opts.TLS.KeyFile = "", ""
	up, err = uplink.New(opts, out)
	require.NoError(t, err)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = up.Run(ctx) }()
	require.Eventually(t, func() bool { return up.Stats().LastConnectErr != "" }, 10*time.Second, 20*time.Millisecond)
	require.False(t, up.Connected())

	_, err = uplink.New(uplink.Options{Brokers: []string{"http://x:1"}, ClientID: "r", StatusTopic: "t", Will: opts.Will, Online: opts.Online, Offline: opts.Offline}, out)
	require.ErrorIs(t, err, uplink.ErrBadBroker)
	opts.TLS.CAFile = dir + "/missing.pem"
	_, err = uplink.New(opts, out)
	require.ErrorIs(t, err, uplink.ErrBadBroker)
}

// makeCert writes name.pem and name.key to dir: a CA when parent is nil,
// else a certificate signed by parent (a server one when dnsName is set).
func makeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, dnsName string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if dnsName != "" {
		tmpl.DNSNames = []string{dnsName}
	}
	signer, signKey := parent, parentKey
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		signer, signKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	require.NoError(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return cert, key
}

func TestUsernamePassword(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "robot", "s3cret").CombinedOutput()
	require.NoError(t, err, "mosquitto_passwd: %s", out)
	m := brokertest.StartMosquitto(t, brokertest.Options{Extra: "user root\nallow_anonymous false\npassword_file " + pw})
	sp, err := spool.Open(spool.Options{Path: filepath.Join(t.TempDir(), "spool.db")})
	require.NoError(t, err)
	defer sp.Close()
	for _, tc := range []struct {
		password string
		ok       bool
	}{{"s3cret", true}, {"wrong", false}} {
		t.Run(tc.password, func(t *testing.T) {
			up, err := uplink.New(uplink.Options{
				Brokers: []string{m.URL()}, ClientID: robot, Username: "robot", Password: tc.password, StatusTopic: topics.Status(robot),
				Will: status("offline", "lost"), Online: status("online", ""), Offline: status("offline", "shutdown"),
				BackoffMin: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
			}, sp)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- up.Run(ctx) }()
			if tc.ok {
				require.Eventually(t, up.Connected, 10*time.Second, 20*time.Millisecond)
			} else {
				require.Eventually(t, func() bool { return up.Stats().LastConnectErr != "" }, 10*time.Second, 20*time.Millisecond)
				require.Contains(t, up.Stats().LastConnectErr, "not Authorized")
				require.False(t, up.Connected())
			}
			cancel()
			require.NoError(t, <-done)
		})
	}
}

// On shutdown the spool is flushed before the offline status goes out.
func TestShutdownFlushesTheSpoolFirst(t *testing.T) {
	b := brokertest.StartMochi(t)
	h := start(t, b.URL())
	sub := subscribe(t, b.URL(), "flush-watch", false, "fleet/v1/robots/"+robot+"/#")
	require.Eventually(t, h.up.Connected, 10*time.Second, 20*time.Millisecond)
	var ids []string
	for i := range 200 {
		ev := note(i)
		require.NoError(t, h.out.Emit(ev))
		ids = append(ids, ev.ID)
	}
	h.stop(t)
	require.Zero(t, h.out.Stats().Depth)
	require.Eventually(t, func() bool {
		evs := sub.events(t)
		return len(evs) > 0 && evs[len(evs)-1].Type == protocol.TypeRobotStatus && evs[len(evs)-1].Data.(protocol.RobotStatus).State == "offline"
	}, 10*time.Second, 20*time.Millisecond)
	var got []string
	for _, ev := range uniq(sub.events(t)) {
		if ev.Type == protocol.TypeRobotNotification {
			got = append(got, ev.ID)
		}
	}
	require.Equal(t, ids, got)
}
