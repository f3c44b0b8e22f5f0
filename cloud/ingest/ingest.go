// Package ingest is the relay's MQTT side: a paho client that subscribes to
// the whole <prefix>/v1/robots/# tree (again after every reconnect, checking
// the SUBACK), reconnects with jittered backoff, hands every message to a
// bounded queue without blocking paho, and decodes and validates each
// message exactly once before giving it to the hub and the command tracker.
package ingest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

// Options configures a Client. Zero fields take the defaults named here.
type Options struct {
	// Broker is the broker URL: tcp://, ssl:// (tls://, mqtts://), ws://,
	// wss://. Required.
	Broker string
	// Username and Password authenticate to the broker. Default none.
	Username, Password string
	// ClientID is the MQTT client id. Default "fleet-relay-" + a random suffix.
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
	// between connection attempts. Defaults 250ms and 30s.
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
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.ClientID == "" {
		o.ClientID = "fleet-relay-" + protocol.NewID()[16:]
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
		o.ReconnectMax = 30 * time.Second
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

type message struct {
	topic    string
	payload  []byte
	retained bool
}

// Client is the relay's MQTT connection.
type Client struct {
	o     Options
	log   *slog.Logger
	stats *hub.Stats
	mc    mqtt.Client

	queue       chan message
	queuedBytes atomic.Int64
	connected   atomic.Bool
	ready       atomic.Bool   // connected and the SUBACK granted the subscription
	lost        chan struct{} // signalled when the connection drops (cap 1)

	logMu      sync.Mutex           // guards lastLogged
	lastLogged map[string]time.Time // robot → last invalid-message warning
}

// New returns a Client; Run connects it.
func New(o Options) (*Client, error) {
	o.setDefaults()
	if o.Hub == nil {
		return nil, fmt.Errorf("%w: Hub is required", ErrConfig)
	}
	u, err := url.Parse(o.Broker)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: broker URL %q: want scheme://host:port", ErrConfig, o.Broker)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "ws", "wss":
	default:
		return nil, fmt.Errorf("%w: broker URL %q: scheme must be tcp, ssl, tls, mqtts, ws or wss", ErrConfig, o.Broker)
	}
	c := &Client{o: o, log: o.Logger, stats: o.Hub.Stats(), queue: make(chan message, o.QueueMessages),
		lost: make(chan struct{}, 1), lastLogged: map[string]time.Time{}}
	mo := mqtt.NewClientOptions().
		AddBroker(o.Broker).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(true).
		SetAutoReconnect(false). // Run reconnects, with jitter
		SetConnectRetry(false).
		SetKeepAlive(o.KeepAlive).
		SetConnectTimeout(o.ConnectTimeout).
		SetWriteTimeout(o.PublishTimeout).
		SetOrderMatters(true). // one paho goroutine calls onMessage, in order; it never blocks
		SetDefaultPublishHandler(c.onMessage).
		SetOnConnectHandler(func(mqtt.Client) { go c.subscribe() }).
		SetConnectionLostHandler(c.onLost)
	if o.TLS != nil {
		mo.SetTLSConfig(o.TLS)
	}
	c.mc = mqtt.NewClient(mo)
	return c, nil
}

// SetOnReply sets the command.reply hook; call it before Run.
func (c *Client) SetOnReply(f func(ev *protocol.Event, raw []byte)) { c.o.OnReply = f }

// Ready reports whether the connection is up and the subscription was
// acknowledged (what /readyz reports).
func (c *Client) Ready() bool { return c.ready.Load() }

// Connected reports whether the MQTT connection is up.
func (c *Client) Connected() bool { return c.connected.Load() }

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

func (c *Client) drop(topic string) {
	if n := c.stats.IngestDropped.Add(1); n == 1 || n%1000 == 0 {
		c.log.Warn("ingest queue full, dropping MQTT messages", "topic", topic, "dropped_total", n)
	}
}

func (c *Client) onLost(_ mqtt.Client, err error) {
	c.connected.Store(false)
	c.ready.Store(false)
	c.stats.Reconnects.Add(1)
	c.log.Warn("mqtt connection lost", "broker", c.o.Broker, "err", err)
	select {
	case c.lost <- struct{}{}:
	default:
	}
}

// subscribe subscribes to the whole tree and marks the client ready once
// the SUBACK grants it. It retries while connected.
func (c *Client) subscribe() {
	c.connected.Store(true)
	filter := c.o.Topics.AllRobots()
	delay := c.o.ReconnectMin
	for c.mc.IsConnectionOpen() {
		tok := c.mc.Subscribe(filter, 1, nil)
		if !tok.WaitTimeout(c.o.ConnectTimeout) {
			c.log.Warn("mqtt subscribe: no SUBACK in time", "filter", filter)
		} else if err := tok.Error(); err != nil {
			c.log.Warn("mqtt subscribe failed", "filter", filter, "err", err)
		} else if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[filter] > 2 {
			c.log.Warn("mqtt subscribe refused by the broker", "filter", filter, "code", st.Result()[filter])
		} else {
			c.ready.Store(true)
			c.log.Info("mqtt subscribed", "broker", c.o.Broker, "filter", filter)
			return
		}
		time.Sleep(jitter(delay))
		delay = min(2*delay, c.o.ReconnectMax)
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Run connects, reconnects and processes messages until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() { defer close(done); c.work(ctx) }()
	defer func() {
		c.ready.Store(false)
		c.connected.Store(false)
		c.mc.Disconnect(250)
		<-done
	}()
	delay := c.o.ReconnectMin
	for {
		tok := c.mc.Connect()
		ok := tok.WaitTimeout(c.o.ConnectTimeout)
		if ok && tok.Error() == nil {
			c.log.Info("mqtt connected", "broker", c.o.Broker, "client_id", c.o.ClientID)
			delay = c.o.ReconnectMin
			select {
			case <-ctx.Done():
				return nil
			case <-c.lost:
			}
		} else {
			err := tok.Error()
			if !ok {
				err = fmt.Errorf("no CONNACK within %s", c.o.ConnectTimeout)
			}
			c.log.Warn("mqtt connect failed", "broker", c.o.Broker, "err", err, "retry_in", delay)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(jitter(delay)):
		}
		delay = min(2*delay, c.o.ReconnectMax)
	}
}

// Publish publishes one message and waits for the broker's acknowledgement.
func (c *Client) Publish(topic string, qos byte, retained bool, payload []byte) error {
	if !c.mc.IsConnectionOpen() {
		return ErrNotConnected
	}
	tok := c.mc.Publish(topic, qos, retained, payload)
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
		case m := <-c.queue:
			c.queuedBytes.Add(-int64(len(m.payload)))
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
