// Package uplink is the robot agent's MQTT connection (paho.mqtt.golang,
// MQTT 3.1.1). It connects with the robot id as client id and a retained
// Last Will, publishes the retained online status on every connect, makes
// the subscriptions again on every connect, and sends the durable spool in
// seq order with a bounded in-flight window, acknowledging each record to
// the spool only after its PUBACK. It reconnects forever with exponential,
// jittered backoff and, on shutdown, publishes the retained offline status
// before it disconnects.
//
// Each connection attempt is a fresh paho client with auto-reconnect off:
// the uplink owns the reconnect loop, so a connection's in-flight tokens
// never outlive it and the spool (not paho's in-memory store) decides what
// is resent: after a reconnect, everything not yet acknowledged, oldest
// first. It is also the only way to give every attempt its own Last Will:
// paho copies the Will into the client when it is created (its
// ConnectionAttemptHandler may change only the TLS config), so each attempt
// takes a new connection epoch and builds a client whose Will carries it.
// With several brokers the attempts go round the list; the backoff
// (mqttkit.Backoff) is slept once a whole round has failed.
package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
)

// Source is the durable outbox the uplink drains (*spool.Outbox).
type Source interface {
	// Read returns up to max records with a seq above after, in seq order.
	Read(after int64, max int) ([]spool.Entry, error)
	// Ack deletes records whose PUBACK arrived.
	Ack(seqs ...int64) error
	// Notify is signalled when new records were stored.
	Notify() <-chan struct{}
}

// Subscription is a topic the uplink subscribes to on every connect.
// Handler runs inside paho's callback: it must not block (hand the payload
// to a bounded queue). retained is the message's RETAIN flag: set when the
// broker sends a retained message because of the subscription (MQTT 3.1.1
// §3.3.1.3), never for a live publish.
type Subscription struct {
	Topic   string
	QoS     byte
	Handler func(topic string, payload []byte, retained bool)
}

// TLS configures ssl://, tls://, mqtts:// and wss:// connections.
type TLS = mqttkit.TLSFiles

// Options configures the uplink.
type Options struct {
	// Brokers are the broker URLs (mqttkit.Schemes), tried in turn. Required.
	Brokers []string
	// ClientID is the robot id. Required.
	ClientID string
	// Username and Password; empty for none.
	Username, Password string
	// TLS settings; zero value means system roots.
	TLS TLS
	// KeepAlive of the MQTT connection. Zero means 30s.
	KeepAlive time.Duration
	// ConnectTimeout of one attempt. Zero means 10s.
	ConnectTimeout time.Duration
	// BackoffMin is the first reconnect delay. Zero means 500ms.
	BackoffMin time.Duration
	// BackoffFastMax caps the reconnect delay during the first
	// BackoffFastFor of an outage, so a broker back within that time sees
	// the robot again within BackoffFastMax. Zero means 8s.
	BackoffFastMax time.Duration
	// BackoffFastFor: see BackoffFastMax. Zero means 2m.
	BackoffFastFor time.Duration
	// BackoffMax caps the reconnect delay after that. Zero means 60s.
	BackoffMax time.Duration
	// Window is how many QoS 1 publishes may await their PUBACK. Zero means 64.
	Window int
	// ShutdownTimeout bounds the final offline publish. Zero means 5s.
	ShutdownTimeout time.Duration
	// StatusTopic receives the Last Will, online and offline payloads. Required.
	StatusTopic string
	// NextEpoch returns the next connection epoch (persisted, increasing);
	// it is called once per connection attempt. Nil means epoch 0 always.
	NextEpoch func() int64
	// Will returns the Last Will payload (status offline, reason lost) of
	// the attempt with this epoch; it is called before every attempt. Required.
	Will func(epoch int64) []byte
	// Online returns the retained status published on every connect, with
	// the connection's epoch. Required.
	Online func(epoch int64) []byte
	// Offline returns the retained status published on clean shutdown,
	// with the connection's epoch. Required.
	Offline func(epoch int64) []byte
	// OnConnect runs (in the uplink goroutine) after the status and
	// subscriptions are up, before the spool is sent. Optional.
	OnConnect func()
	// Subscriptions to make on every connect.
	Subscriptions []Subscription
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) fillDefaults() {
	if o.KeepAlive == 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = mqttkit.DefaultBackoffMin
	}
	if o.BackoffFastMax == 0 {
		o.BackoffFastMax = mqttkit.DefaultBackoffFastMax
	}
	if o.BackoffFastFor == 0 {
		o.BackoffFastFor = mqttkit.DefaultBackoffFastFor
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = mqttkit.DefaultBackoffMax
	}
	if o.NextEpoch == nil {
		o.NextEpoch = func() int64 { return 0 }
	}
	if o.Window == 0 {
		o.Window = 64
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Stats are the uplink's counters.
type Stats struct {
	Connected      bool
	Broker         string // the broker connected to, "" when disconnected
	Epoch          int64  // the current (or last) connection's epoch
	Connects       int64  // successful connects
	Attempts       int64  // connection attempts
	Sent           int64  // spool records acknowledged by the broker
	DirectSent     int64  // direct (QoS 0) publishes handed to the connection
	DirectDropped  int64  // direct publishes dropped because no connection was up
	LastConnectErr string
}

// Uplink is the MQTT connection manager.
type Uplink struct {
	opts Options
	src  Source
	log  *slog.Logger
	tls  *tls.Config

	// cur is the live client, nil when disconnected; written by Run only.
	cur atomic.Pointer[mqtt.Client]

	connects, attempts, sent, directSent, directDropped atomic.Int64
	// mu guards lastErr, broker and epoch.
	mu      sync.Mutex
	lastErr string
	broker  string
	epoch   int64
	// connWarn rate-limits repeated connect failures in the log.
	connWarn      time.Time
	connFailCount int
}

// New checks the options and returns an uplink; it does not connect.
func New(opts Options, src Source) (*Uplink, error) {
	opts.fillDefaults()
	if err := mqttkit.ValidateBrokers(opts.Brokers); err != nil {
		return nil, fmt.Errorf("uplink: %w: %w", ErrBadBroker, err)
	}
	if opts.ClientID == "" || opts.StatusTopic == "" || opts.Will == nil || opts.Online == nil || opts.Offline == nil {
		return nil, errors.New("uplink: ClientID, StatusTopic, Will, Online and Offline are required")
	}
	up := &Uplink{opts: opts, src: src, log: opts.Logger.With("component", "uplink")}
	if mqttkit.NeedsTLS(opts.Brokers) {
		var err error
		if up.tls, err = opts.TLS.Config(); err != nil {
			return nil, fmt.Errorf("uplink: %w: %w", ErrBadBroker, err)
		}
	}
	return up, nil
}

// Stats returns the counters.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := Stats{Connected: u.cur.Load() != nil, Broker: u.broker, Epoch: u.epoch, Connects: u.connects.Load(), Attempts: u.attempts.Load(), Sent: u.sent.Load(),
		DirectSent: u.directSent.Load(), DirectDropped: u.directDropped.Load(), LastConnectErr: u.lastErr}
	if !st.Connected {
		st.Broker = ""
	}
	return st
}

// Connected reports whether a connection is up.
func (u *Uplink) Connected() bool { return u.cur.Load() != nil }

// PublishDirect publishes a message that is not spooled (robot.metrics at
// QoS 0). It never blocks on the network: with no connection the message
// is dropped, counted and ErrNotConnected returned.
func (u *Uplink) PublishDirect(topic string, qos byte, retained bool, payload []byte) error {
	c := u.cur.Load()
	if c == nil {
		u.directDropped.Add(1)
		return ErrNotConnected
	}
	(*c).Publish(topic, qos, retained, payload)
	u.directSent.Add(1)
	return nil
}

// Run connects and keeps the uplink up until ctx is cancelled; then it
// publishes the offline status (when connected) and disconnects. It
// returns nil on cancellation.
func (u *Uplink) Run(ctx context.Context) error {
	bo := &mqttkit.Backoff{Min: u.opts.BackoffMin, FastMax: u.opts.BackoffFastMax, FastFor: u.opts.BackoffFastFor, Max: u.opts.BackoffMax}
	n := len(u.opts.Brokers)
	idx, failed := 0, 0 // broker to try next; failed attempts in this round
	for {
		broker := u.opts.Brokers[idx]
		c, epoch, lost, err := u.connect(ctx, broker)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			idx, failed = (idx+1)%n, failed+1
			if failed < n {
				continue // fail over to the next broker at once
			}
			failed = 0
			d := bo.Next()
			u.noteConnectErr(broker, err, d)
			if !mqttkit.SleepCtx(ctx, d) {
				return nil
			}
			continue
		}
		failed = 0
		up := time.Now()
		err = u.serve(ctx, c, lost)
		u.cur.Store(nil)
		if ctx.Err() != nil {
			u.shutdown(c, epoch)
			return nil
		}
		c.Disconnect(0)
		// Only a connection that held for a while starts a new outage (short
		// delays again): a broker that accepts and drops at once is not
		// hammered, and after BackoffFastFor it gets the long delays.
		if time.Since(up) >= u.opts.BackoffFastMax {
			bo.Reset()
		}
		d := bo.Next()
		u.log.Warn("broker connection lost; reconnecting", "broker", broker, "epoch", epoch, "err", err,
			"up_for", time.Since(up).Round(time.Millisecond).String(), "next_in", d.Round(time.Millisecond).String())
		if !mqttkit.SleepCtx(ctx, d) {
			return nil
		}
	}
}

func (u *Uplink) noteConnectErr(broker string, err error, next time.Duration) {
	u.mu.Lock()
	u.lastErr = err.Error()
	u.connFailCount++
	// Log the first failure, then at most one line a minute.
	show := u.connFailCount == 1 || time.Since(u.connWarn) >= time.Minute
	n := u.connFailCount
	if show {
		u.connWarn = time.Now()
	}
	u.mu.Unlock()
	if show {
		u.log.Warn("cannot connect to the broker; retrying", "broker", broker, "brokers", len(u.opts.Brokers), "err", err,
			"failures", n, "next_in", next.Round(time.Millisecond).String())
	}
}

// connect makes one connection attempt to broker with a new epoch, then
// subscribes and publishes the online status. lost is signalled when paho
// reports the connection gone.
func (u *Uplink) connect(ctx context.Context, broker string) (mqtt.Client, int64, <-chan error, error) {
	lost := make(chan error, 1)
	epoch := u.opts.NextEpoch()
	u.attempts.Add(1)
	u.mu.Lock()
	u.epoch = epoch
	u.mu.Unlock()
	o := mqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(u.opts.ClientID).
		SetUsername(u.opts.Username).
		SetPassword(u.opts.Password).
		SetCleanSession(true).
		SetKeepAlive(u.opts.KeepAlive).
		SetPingTimeout(min(u.opts.KeepAlive, 10*time.Second)).
		SetConnectTimeout(u.opts.ConnectTimeout).
		SetWriteTimeout(u.opts.ConnectTimeout).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		// 3.1.1 only: left at 0, paho retries a failed handshake as MQTT
		// 3.1 on a second TCP connection with the same Will, so one epoch
		// could be two connections, and the abandoned one's Will, late
		// out of a network hole, would carry the live connection's epoch.
		SetProtocolVersion(4).
		SetOrderMatters(true).
		SetBinaryWill(u.opts.StatusTopic, u.opts.Will(epoch), 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			select { // never block in a paho callback
			case lost <- err:
			default:
			}
		})
	if u.tls != nil {
		o.SetTLSConfig(u.tls)
	}
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect(), u.opts.ConnectTimeout+time.Second); err != nil {
		c.Disconnect(0)
		return nil, 0, nil, fmt.Errorf("connect %s: %w", broker, err)
	}
	// Subscribe before announcing online: a dashboard that sees "online"
	// may send a command at once, and it must find the subscription.
	for _, s := range u.opts.Subscriptions {
		h := s.Handler
		tok := c.Subscribe(s.Topic, s.QoS, func(_ mqtt.Client, m mqtt.Message) { h(m.Topic(), m.Payload(), m.Retained()) })
		if err := wait(ctx, tok, u.opts.ConnectTimeout); err != nil {
			c.Disconnect(0)
			return nil, 0, nil, fmt.Errorf("subscribe %q: %w", s.Topic, err)
		}
	}
	if err := wait(ctx, c.Publish(u.opts.StatusTopic, 1, true, u.opts.Online(epoch)), u.opts.ConnectTimeout); err != nil {
		c.Disconnect(0)
		return nil, 0, nil, fmt.Errorf("publish online status: %w", err)
	}
	u.connects.Add(1)
	u.mu.Lock()
	u.lastErr, u.connFailCount, u.broker = "", 0, broker
	u.mu.Unlock()
	u.cur.Store(&c)
	u.log.Info("connected to the broker", "broker", broker, "client_id", u.opts.ClientID, "epoch", epoch)
	if u.opts.OnConnect != nil {
		u.opts.OnConnect()
	}
	return c, epoch, lost, nil
}

var wait = mqttkit.Wait

type inflight struct {
	seq int64
	tok mqtt.Token
}

// maxAckBatch caps the records deleted in one spool transaction.
const maxAckBatch = 4096

// acker deletes acknowledged records from the spool, batching every ack
// that arrived while the previous transaction was committing, so the
// sender never waits for the disk. It reports the first error on done.
func (u *Uplink) acker(in <-chan int64, done chan<- error) {
	var (
		batch    []int64
		firstErr error
	)
	for s := range in {
		batch = append(batch[:0], s)
	more:
		for len(batch) < maxAckBatch {
			select {
			case s, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, s)
			default:
				break more
			}
		}
		if err := u.src.Ack(batch...); err != nil && firstErr == nil {
			firstErr = err
		}
		u.sent.Add(int64(len(batch)))
	}
	done <- firstErr
}

// serve sends the spool over connection c until the connection is lost or
// ctx is cancelled. It starts from the oldest unacknowledged record: what
// the previous connection left in flight is sent again (the relay
// de-duplicates by event id). When ctx is cancelled it keeps sending for
// up to ShutdownTimeout so that the last events (a session cancelled by
// the shutdown) go out before the offline status. Before it returns, every
// ack it received is committed to the spool, so the next connection (or
// the next start) does not resend them.
func (u *Uplink) serve(ctx context.Context, c mqtt.Client, lost <-chan error) (err error) {
	acks := make(chan int64, maxAckBatch)
	ackDone := make(chan error, 1)
	go u.acker(acks, ackDone)
	defer func() {
		close(acks)
		if aerr := <-ackDone; aerr != nil && err == nil {
			err = fmt.Errorf("spool ack: %w", aerr)
		}
	}()
	var (
		queue    []inflight
		cursor   int64 // highest seq handed to this connection
		buf      []spool.Entry
		more     = true // the spool may hold records above cursor
		stop     = ctx.Done()
		deadline <-chan time.Time // set once stopping
	)
	for {
		// Fill the window in seq order.
		for more && len(queue) < u.opts.Window {
			if len(buf) == 0 {
				es, err := u.src.Read(cursor, u.opts.Window)
				if err != nil {
					return err
				}
				if len(es) == 0 {
					more = false
					break
				}
				buf = es
			}
			e := buf[0]
			buf = buf[1:]
			queue = append(queue, inflight{seq: e.Seq, tok: c.Publish(e.Topic, e.QoS, e.Retained, e.Payload)})
			cursor = e.Seq
		}
		if deadline != nil && len(queue) == 0 && !more {
			return nil // stopping, and everything was acknowledged
		}
		var head <-chan struct{}
		if len(queue) > 0 {
			head = queue[0].tok.Done()
		}
		select {
		case <-stop:
			stop = nil
			t := time.NewTimer(u.opts.ShutdownTimeout)
			defer t.Stop()
			deadline = t.C
			more = true
		case <-deadline:
			return nil // what is still in flight stays in the spool
		case err := <-lost:
			return fmt.Errorf("%w: %v", ErrConnectionLost, err)
		case <-u.src.Notify():
			more = true
		case <-head:
			for len(queue) > 0 && isDone(queue[0].tok) {
				if err := queue[0].tok.Error(); err != nil {
					return fmt.Errorf("%w: publish seq %d: %v", ErrConnectionLost, queue[0].seq, err)
				}
				acks <- queue[0].seq
				queue = queue[1:]
			}
		}
	}
}

func isDone(t mqtt.Token) bool {
	select {
	case <-t.Done():
		return true
	default:
		return false
	}
}

// shutdown publishes the retained offline status and disconnects.
func (u *Uplink) shutdown(c mqtt.Client, epoch int64) {
	err := wait(context.Background(), c.Publish(u.opts.StatusTopic, 1, true, u.opts.Offline(epoch)), u.opts.ShutdownTimeout)
	if err != nil {
		u.log.Warn("offline status not acknowledged before disconnect", "err", err)
	}
	c.Disconnect(250)
	u.log.Info("disconnected from the broker")
}
