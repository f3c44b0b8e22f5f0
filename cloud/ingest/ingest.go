// Package ingest is the relay's MQTT side: a paho client that subscribes to
// the whole <prefix>/v1/robots/# tree (again after every reconnect, checking
// the SUBACK), reconnects with jittered backoff, fails over between several
// brokers, hands every message to a bounded queue without blocking paho,
// and decodes and validates each message exactly once before giving it to
// the hub and the command tracker.
//
// The MQTT session is persistent: a stable client id, clean session off and
// a QoS 1 subscription, so while the relay is away (a network cut, its own
// restart, a broker restart with persistence) the broker queues the robots'
// QoS 1 events for it and delivers them when it is back. When the relay
// cannot know it has everything — the broker answers a reconnect with
// "session present = false" (it lost its state, or the relay failed over to
// a broker that never had its session), or the ingest queue overflowed — it
// reports a gap (Options.OnGap) so clients are told instead of silently
// missing events.
package ingest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

// Gap reasons passed to Options.OnGap.
const (
	// GapSessionLost: the broker had no session for the relay on a
	// reconnect, so what was published while the relay was away is gone.
	GapSessionLost = "mqtt_session_lost"
	// GapQueueFull: the ingest queue was full and messages were dropped.
	GapQueueFull = "ingest_queue_full"
)

// maxGapRobots bounds the robots remembered between two gap reports; past
// it the gap is reported for every robot.
const maxGapRobots = 1024

// Options configures a Client. Zero fields take the defaults named here.
type Options struct {
	// Brokers are the broker URLs: tcp://, ssl:// (tls://, mqtts://), ws://,
	// wss://. The client connects to one at a time and moves to the next
	// after a failed attempt or a lost connection. At least one of Brokers
	// and Broker is required.
	Brokers []string
	// Broker is one more broker URL, tried before Brokers.
	Broker string
	// Username and Password authenticate to the broker. Default none.
	Username, Password string
	// ClientID is the MQTT client id, which names the relay's persistent
	// session on the broker: keep it stable across restarts and give every
	// replica its own. Default DefaultClientID().
	ClientID string
	// TLS is used for ssl:// and wss:// brokers. Default: system roots.
	TLS *tls.Config
	// Topics is the topic prefix. Default fleet.
	Topics protocol.Topics
	// QueueMessages caps the messages waiting for decoding. Default 16384.
	QueueMessages int
	// QueueBytes caps the payload bytes waiting for decoding. Default 64 MiB.
	QueueBytes int64
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between connection attempts. Defaults 250ms and 5s: after a broker
	// restart the relay is back within ReconnectMax of the broker.
	ReconnectMin, ReconnectMax time.Duration
	// ConnectTimeout bounds a connection attempt and a SUBACK. Default 10s.
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keep-alive. Default 30s.
	KeepAlive time.Duration
	// PublishTimeout bounds waiting for a PUBACK. Default 5s.
	PublishTimeout time.Duration
	// Hub receives every valid event. Required.
	Hub *hub.Hub
	// OnReply sees every valid command.reply (the command tracker). Default none.
	OnReply func(ev *protocol.Event, raw []byte)
	// OnGap is told when events may have been missed: robot "" means every
	// robot; reason is one of the Gap* constants. It is called from the
	// decoding goroutine, before the next message is handled. Default none.
	OnGap func(robot, reason string)
	// MetricsAndRepliesOnly subscribes to every robot's metrics and replies
	// only: the JetStream history brings the other kinds (through Inject),
	// so a lost MQTT session is no gap. Default false: the whole tree.
	MetricsAndRepliesOnly bool
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// DefaultClientID is "fleet-relay-" and the hostname (sanitized): stable
// across restarts, distinct per replica host.
func DefaultClientID() string {
	h, _ := os.Hostname()
	if h = protocol.SanitizeID(h); h == "" {
		h = "unknown"
	}
	return "fleet-relay-" + h
}

func (o *Options) setDefaults() {
	if o.ClientID == "" {
		o.ClientID = DefaultClientID()
	}
	if o.QueueMessages <= 0 {
		o.QueueMessages = 16384
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 64 << 20
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 250 * time.Millisecond
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 5 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.OnReply == nil {
		o.OnReply = func(*protocol.Event, []byte) {}
	}
	if o.OnGap == nil {
		o.OnGap = func(string, string) {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

type message struct {
	topic    string
	payload  []byte
	retained bool
}

// Stats are the MQTT ingest's counters. All fields are atomic.
type Stats struct {
	MessagesIn atomic.Int64 // MQTT messages handed to the relay
	Invalid    atomic.Int64 // messages that failed to decode or validate
	Dropped    atomic.Int64 // messages dropped because the ingest queue was full
	Reconnects atomic.Int64 // connections lost (each followed by reconnection attempts)
}

// Stats returns the ingest's counters.
func (c *Client) Stats() *Stats { return &c.stats }

// Client is the relay's MQTT connection.
type Client struct {
	o       Options
	log     *slog.Logger
	stats   Stats
	brokers []string
	clients []mqtt.Client // one paho client per broker, same client id
	cur     atomic.Int32  // index of the broker in use (or last tried)

	queue       chan message
	queuedBytes atomic.Int64
	connected   atomic.Bool
	ready       atomic.Bool   // connected and the SUBACK granted the subscription
	lost        chan struct{} // signalled when the connection drops (cap 1)
	connectedAt atomic.Int64  // unix nanoseconds of the last successful connect
	shortLived  atomic.Int64  // consecutive connections lost within takeoverWindow

	gapMu      sync.Mutex          // guards gapRobots and gapAll
	gapRobots  map[string]struct{} // robots whose messages were dropped since the last report
	gapAll     string              // reason of a gap for every robot, "" = none
	gapPending atomic.Bool         // a gap waits to be reported
	gapWake    chan struct{}       // wakes the decoding goroutine for a gap (cap 1)

	logMu      sync.Mutex           // guards lastLogged
	lastLogged map[string]time.Time // robot → last invalid-message warning
}

// New returns a Client; Run connects it.
func New(o Options) (*Client, error) {
	o.setDefaults()
	if o.Hub == nil {
		return nil, fmt.Errorf("%w: Hub is required", ErrConfig)
	}
	var brokers []string
	for _, b := range append([]string{o.Broker}, o.Brokers...) {
		brokers = append(brokers, mqttkit.SplitBrokers(b)...)
	}
	if err := mqttkit.ValidateBrokers(brokers); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c := &Client{o: o, log: o.Logger, brokers: brokers, queue: make(chan message, o.QueueMessages),
		lost: make(chan struct{}, 1), lastLogged: map[string]time.Time{}, gapRobots: map[string]struct{}{},
		gapWake: make(chan struct{}, 1)}
	for _, b := range brokers {
		mo := mqtt.NewClientOptions().
			AddBroker(b).
			SetClientID(o.ClientID).
			SetUsername(o.Username).
			SetPassword(o.Password).
			SetCleanSession(false).  // the broker queues what we miss while away
			SetAutoReconnect(false). // Run reconnects, with jitter and failover
			SetConnectRetry(false).
			SetProtocolVersion(4). // no silent 3.1 retry on a second connection with our session's id
			SetKeepAlive(o.KeepAlive).
			SetConnectTimeout(o.ConnectTimeout).
			SetWriteTimeout(o.PublishTimeout).
			SetOrderMatters(true).                 // one paho goroutine calls onMessage, in order; it never blocks
			SetDefaultPublishHandler(c.onMessage). // queued messages arrive right after CONNACK
			SetConnectionLostHandler(c.onLost)
		if o.TLS != nil {
			mo.SetTLSConfig(o.TLS)
		}
		c.clients = append(c.clients, mqtt.NewClient(mo))
	}
	return c, nil
}

// SetOnReply sets the command.reply hook; call it before Run.
func (c *Client) SetOnReply(f func(ev *protocol.Event, raw []byte)) { c.o.OnReply = f }

// SetOnGap sets the gap hook; call it before Run.
func (c *Client) SetOnGap(f func(robot, reason string)) { c.o.OnGap = f }

// Ready reports whether the connection is up and the subscription was
// acknowledged (what /readyz reports).
func (c *Client) Ready() bool { return c.ready.Load() }

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return c.connected.Load() }

// Broker returns the URL of the broker in use (or tried last).
func (c *Client) Broker() string { return c.brokers[c.cur.Load()] }

// ClientID returns the MQTT client id.
func (c *Client) ClientID() string { return c.o.ClientID }

func (c *Client) mc() mqtt.Client { return c.clients[c.cur.Load()] }

// onMessage is paho's callback: it must not block.
func (c *Client) onMessage(_ mqtt.Client, m mqtt.Message) {
	c.stats.MessagesIn.Add(1)
	p := m.Payload()
	if c.queuedBytes.Add(int64(len(p))) > c.o.QueueBytes {
		c.queuedBytes.Add(-int64(len(p)))
		c.drop(m.Topic())
		return
	}
	select {
	case c.queue <- message{topic: m.Topic(), payload: p, retained: m.Retained()}:
	default:
		c.queuedBytes.Add(-int64(len(p)))
		c.drop(m.Topic())
	}
}

// drop counts a message the queue could not take and remembers its robot
// for a gap report.
func (c *Client) drop(topic string) {
	if n := c.stats.Dropped.Add(1); n == 1 || n%1000 == 0 {
		c.log.Warn("ingest queue full, dropping MQTT messages", "topic", topic, "dropped_total", n)
	}
	robot := ""
	if tp, err := c.o.Topics.Parse(topic); err == nil {
		robot = tp.Robot
	}
	c.markGap(robot, GapQueueFull)
}

// markGap records a gap for the decoding goroutine to report; it never
// blocks on the hub.
func (c *Client) markGap(robot, reason string) {
	c.gapMu.Lock()
	if robot == "" || len(c.gapRobots) >= maxGapRobots {
		c.gapAll = reason
		clear(c.gapRobots)
	} else if c.gapAll == "" {
		c.gapRobots[robot] = struct{}{}
	}
	c.gapMu.Unlock()
	c.gapPending.Store(true)
	select {
	case c.gapWake <- struct{}{}:
	default:
	}
}

// reportGaps hands the recorded gaps to OnGap.
func (c *Client) reportGaps() {
	if !c.gapPending.Swap(false) {
		return
	}
	c.gapMu.Lock()
	all := c.gapAll
	robots := make([]string, 0, len(c.gapRobots))
	for r := range c.gapRobots {
		robots = append(robots, r)
	}
	c.gapAll = ""
	clear(c.gapRobots)
	c.gapMu.Unlock()
	if all != "" {
		c.o.OnGap("", all)
		return
	}
	for _, r := range robots {
		c.o.OnGap(r, GapQueueFull)
	}
}

// takeoverWindow: a connection lost this soon after it was made, again
// and again, is the mark of another client with the same client id (the
// broker disconnects the older session at every CONNECT).
const takeoverWindow = 10 * time.Second

func (c *Client) onLost(_ mqtt.Client, err error) {
	c.connected.Store(false)
	c.ready.Store(false)
	c.stats.Reconnects.Add(1)
	c.log.Warn("mqtt connection lost", "broker", c.Broker(), "err", err)
	if time.Since(time.Unix(0, c.connectedAt.Load())) < takeoverWindow {
		if n := c.shortLived.Add(1); n == 3 || n%100 == 0 {
			c.log.Warn("mqtt connections keep dropping right after they are made: is another relay using the same client id? "+
				"every replica needs its own (mqtt.client_id, FLEET_RELAY_MQTT_CLIENT_ID; with use_username_as_clientid its own account)",
				"client_id", c.o.ClientID, "short_connections", n)
		}
	} else {
		c.shortLived.Store(0)
	}
	select {
	case c.lost <- struct{}{}:
	default:
	}
}

// Filters returns the topic filters the relay subscribes to: the whole
// tree, or with MetricsAndRepliesOnly (the JetStream history carries the
// other kinds) only the metrics and replies of every robot, so the broker
// neither delivers nor keeps for the relay's session what the stream
// brings. (What an earlier run's session still holds arrives once and is
// dropped by the hub's de-duplication by event id.)
func (c *Client) Filters() []string {
	if !c.o.MetricsAndRepliesOnly {
		return []string{c.o.Topics.AllRobots()}
	}
	base := c.o.Topics.Prefix() + "/v1/robots/+/"
	return []string{base + string(protocol.KindMetrics), base + string(protocol.KindReplies)}
}

// staleFilters are the filters an earlier run may have left in the
// relay's persistent session (history switched on or off since).
func (c *Client) staleFilters() []string {
	base := c.o.Topics.Prefix() + "/v1/robots/+/"
	var out []string
	for _, f := range []string{c.o.Topics.AllRobots(), base + string(protocol.KindMetrics), base + string(protocol.KindReplies)} {
		if !slices.Contains(c.Filters(), f) {
			out = append(out, f)
		}
	}
	return out
}

// subscribe subscribes to Filters and marks the client ready once the
// SUBACK grants them; it retries while connected. With a session the
// broker kept, the subscriptions exist already and this only confirms
// them; filters an earlier run left there are unsubscribed.
func (c *Client) subscribe(mc mqtt.Client) {
	filters := c.Filters()
	want := map[string]byte{}
	for _, f := range filters {
		want[f] = 1
	}
	bo := c.backoff()
	for mc.IsConnectionOpen() {
		tok := mc.SubscribeMultiple(want, nil)
		if !tok.WaitTimeout(c.o.ConnectTimeout) {
			c.log.Warn("mqtt subscribe: no SUBACK in time", "filters", filters)
		} else if err := tok.Error(); err != nil {
			c.log.Warn("mqtt subscribe failed", "filters", filters, "err", err)
		} else if refused := c.refused(tok, filters); refused != "" {
			c.log.Warn("mqtt subscribe refused by the broker", "filter", refused)
		} else {
			if stale := c.staleFilters(); len(stale) > 0 {
				if ut := mc.Unsubscribe(stale...); !ut.WaitTimeout(c.o.ConnectTimeout) || ut.Error() != nil {
					c.log.Warn("mqtt unsubscribe of an earlier run's filters failed", "filters", stale, "err", ut.Error())
				}
			}
			c.ready.Store(true)
			c.log.Info("mqtt subscribed", "broker", c.Broker(), "filters", filters)
			return
		}
		time.Sleep(bo.Next())
	}
}

// refused returns a filter the SUBACK refused (code > 2), "" if none; a
// grant at QoS 0 is warned about.
func (c *Client) refused(tok mqtt.Token, filters []string) string {
	st, ok := tok.(*mqtt.SubscribeToken)
	if !ok {
		return ""
	}
	for _, f := range filters {
		switch code := st.Result()[f]; {
		case code > 2:
			return f
		case code == 0:
			c.log.Warn("mqtt subscription granted at QoS 0 only: the broker will not queue events while the relay is away", "filter", f)
		}
	}
	return ""
}

// backoff is the retry schedule: jittered, doubling from ReconnectMin,
// capped at ReconnectMax — a low cap, so a broker that was down for a while
// sees the relay back within ReconnectMax; a handful of relay replicas is
// no reconnect storm.
func (c *Client) backoff() *mqttkit.Backoff {
	return &mqttkit.Backoff{Min: c.o.ReconnectMin, FastMax: c.o.ReconnectMax, Max: c.o.ReconnectMax}
}

// Run connects, reconnects and processes messages until ctx ends. After a
// failed attempt or a lost connection it waits a jittered backoff (reset by
// every successful connection) and tries the next broker of the list.
func (c *Client) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { defer close(done); c.work(ctx) }()
	defer func() {
		c.ready.Store(false)
		c.connected.Store(false)
		c.mc().Disconnect(250)
		<-done
	}()
	bo := c.backoff()
	everConnected := false
	for {
		mc := c.mc()
		tok := mc.Connect()
		// paho bounds the dial and the CONNACK wait by ConnectTimeout each.
		ok := tok.WaitTimeout(2*c.o.ConnectTimeout + time.Second)
		if ok && tok.Error() == nil {
			present := false
			if ct, isCT := tok.(*mqtt.ConnectToken); isCT {
				present = ct.SessionPresent()
			}
			c.log.Info("mqtt connected", "broker", c.Broker(), "client_id", c.o.ClientID, "session_present", present)
			switch {
			case everConnected && !present && c.o.MetricsAndRepliesOnly:
				c.log.Info("mqtt broker has no session for the relay; events come from the history stream, so none are lost",
					"broker", c.Broker(), "client_id", c.o.ClientID)
			case everConnected && !present:
				// Whatever was published while we were away was not kept
				// for us: every room may have a hole.
				c.log.Warn("mqtt broker has no session for the relay: events published while it was away are lost",
					"broker", c.Broker(), "client_id", c.o.ClientID)
				c.markGap("", GapSessionLost)
			}
			everConnected = true
			c.connected.Store(true)
			c.connectedAt.Store(time.Now().UnixNano())
			go c.subscribe(mc)
			bo.Reset()
			select {
			case <-ctx.Done():
				return nil
			case <-c.lost:
			}
		} else {
			err := tok.Error()
			if !ok {
				err = fmt.Errorf("no CONNACK within %s", c.o.ConnectTimeout)
				mc.Disconnect(0)
			}
			c.log.Warn("mqtt connect failed", "broker", c.Broker(), "err", err)
		}
		if len(c.clients) > 1 {
			c.cur.Store((c.cur.Load() + 1) % int32(len(c.clients)))
		}
		if !bo.Sleep(ctx) {
			return nil
		}
	}
}

// Publish publishes one message and waits for the broker's acknowledgement.
func (c *Client) Publish(topic string, qos byte, retained bool, payload []byte) error {
	mc := c.mc()
	if !mc.IsConnectionOpen() {
		return ErrNotConnected
	}
	tok := mc.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(c.o.PublishTimeout) {
		return fmt.Errorf("publish %s: %w", topic, ErrPublishTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

func (c *Client) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.gapWake:
			c.reportGaps()
		case m := <-c.queue:
			c.queuedBytes.Add(-int64(len(m.payload)))
			c.reportGaps()
			c.handle(m)
		}
	}
}

// handle decodes one message once and routes it.
func (c *Client) handle(m message) {
	tp, err := c.o.Topics.Parse(m.topic)
	if err != nil {
		c.invalid("", m.topic, err)
		return
	}
	if tp.Kind == protocol.KindCommands {
		return // our own commands, seen through the # subscription
	}
	if len(m.payload) == 0 {
		if tp.Kind.Retained() {
			c.o.Hub.Clear(tp) // a retained message was deleted
			return
		}
		c.invalid(tp.Robot, m.topic, fmt.Errorf("empty payload"))
		return
	}
	ev, err := protocol.Decode(m.payload)
	if err == nil {
		err = tp.Matches(ev)
	}
	if err != nil {
		c.invalid(tp.Robot, m.topic, err)
		return
	}
	if ev.Type == protocol.TypeCommandReply {
		c.o.OnReply(ev, m.payload)
	}
	c.o.Hub.Ingest(ev, m.payload, m.retained)
}

// Inject routes a message that did not come from the MQTT subscription (a
// replay of the JetStream history) exactly as if it had: decoded once,
// checked against its topic, de-duplicated by event id in the hub.
func (c *Client) Inject(topic string, payload []byte) {
	c.handle(message{topic: topic, payload: payload})
}

// invalid counts a bad message and logs it at most once per robot per minute.
func (c *Client) invalid(robot, topic string, err error) {
	c.stats.Invalid.Add(1)
	now := time.Now()
	c.logMu.Lock()
	last, seen := c.lastLogged[robot]
	if seen && now.Sub(last) < time.Minute {
		c.logMu.Unlock()
		return
	}
	if len(c.lastLogged) > 10000 {
		clear(c.lastLogged)
	}
	c.lastLogged[robot] = now
	c.logMu.Unlock()
	c.log.Warn("invalid MQTT message dropped", "robot", robot, "topic", fmt.Sprintf("%q", topic), "err", fmt.Sprintf("%q", err.Error()))
}
