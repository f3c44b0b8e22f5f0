// Package uplink is the robot agent's MQTT connection (paho.mqtt.golang,
// MQTT 3.1.1). It connects with the robot id as client id and a retained
// Last Will, publishes the retained online status on every connect, makes
// the subscriptions again on every connect, and sends the durable spool in
// seq order with a bounded in-flight window, acknowledging each record to
// the spool only after its PUBACK. It reconnects forever with exponential,
// jittered backoff and, on shutdown, publishes the retained offline status
// before it disconnects.
//
// Each connection is a fresh paho client with auto-reconnect off: the
// uplink owns the reconnect loop, so a connection's in-flight tokens never
// outlive it and the spool (not paho's in-memory store) decides what is
// resent: after a reconnect, everything not yet acknowledged, oldest first.
package uplink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/robotfleet/fleetlink/agent/spool"
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
// to a bounded queue).
type Subscription struct {
	Topic   string
	QoS     byte
	Handler func(topic string, payload []byte)
}

// TLS configures ssl://, tls:// and wss:// connections.
type TLS struct {
	CAFile, CertFile, KeyFile, ServerName string
	InsecureSkipVerify                    bool
}

// Options configures the uplink.
type Options struct {
	// Broker URL (tcp, ssl, tls, ws, wss). Required.
	Broker string
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
	// BackoffMin is the first reconnect delay. Zero means 1s.
	BackoffMin time.Duration
	// BackoffMax caps the reconnect delay. Zero means 60s.
	BackoffMax time.Duration
	// Window is how many QoS 1 publishes may await their PUBACK. Zero means 64.
	Window int
	// ShutdownTimeout bounds the final offline publish. Zero means 5s.
	ShutdownTimeout time.Duration
	// StatusTopic receives the Last Will, online and offline payloads. Required.
	StatusTopic string
	// Will returns the Last Will payload (status offline, reason lost); it
	// is called before every connect. Required.
	Will func() []byte
	// Online returns the retained status published on every connect. Required.
	Online func() []byte
	// Offline returns the retained status published on clean shutdown. Required.
	Offline func() []byte
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
		o.BackoffMin = time.Second
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = 60 * time.Second
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
	Connects       int64 // successful connects
	Sent           int64 // spool records acknowledged by the broker
	DirectSent     int64 // direct (QoS 0) publishes handed to the connection
	DirectDropped  int64 // direct publishes dropped because no connection was up
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

	connects, sent, directSent, directDropped atomic.Int64
	// mu guards lastErr.
	mu      sync.Mutex
	lastErr string
	// connWarn rate-limits repeated connect failures in the log.
	connWarn      time.Time
	connFailCount int
}

// New checks the options and returns an uplink; it does not connect.
func New(opts Options, src Source) (*Uplink, error) {
	opts.fillDefaults()
	u, err := url.Parse(opts.Broker)
	if err != nil {
		return nil, fmt.Errorf("uplink: %w: %v", ErrBadBroker, err)
	}
	switch u.Scheme {
	case "tcp", "ssl", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("uplink: %w: unsupported scheme %q", ErrBadBroker, u.Scheme)
	}
	if opts.ClientID == "" || opts.StatusTopic == "" || opts.Will == nil || opts.Online == nil || opts.Offline == nil {
		return nil, errors.New("uplink: ClientID, StatusTopic, Will, Online and Offline are required")
	}
	up := &Uplink{opts: opts, src: src, log: opts.Logger.With("component", "uplink")}
	if u.Scheme == "ssl" || u.Scheme == "tls" || u.Scheme == "wss" {
		if up.tls, err = tlsConfig(opts.TLS); err != nil {
			return nil, err
		}
	}
	return up, nil
}

func tlsConfig(t TLS) (*tls.Config, error) {
	c := &tls.Config{ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("uplink: %w: ca_file: %v", ErrBadBroker, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("uplink: %w: ca_file %q holds no PEM certificate", ErrBadBroker, t.CAFile)
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("uplink: %w: client certificate: %v", ErrBadBroker, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Stats returns the counters.
func (u *Uplink) Stats() Stats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Stats{Connected: u.cur.Load() != nil, Connects: u.connects.Load(), Sent: u.sent.Load(),
		DirectSent: u.directSent.Load(), DirectDropped: u.directDropped.Load(), LastConnectErr: u.lastErr}
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
	backoff := u.opts.BackoffMin
	for {
		c, lost, err := u.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			u.noteConnectErr(err, backoff)
			if !sleep(ctx, jitter(backoff)) {
				return nil
			}
			backoff = nextBackoff(backoff, u.opts.BackoffMax)
			continue
		}
		up := time.Now()
		err = u.serve(ctx, c, lost)
		u.cur.Store(nil)
		if ctx.Err() != nil {
			u.shutdown(c)
			return nil
		}
		c.Disconnect(0)
		// Only a connection that held for a while resets the backoff: a
		// broker that accepts and drops at once is not hammered every second.
		if time.Since(up) >= u.opts.BackoffMax {
			backoff = u.opts.BackoffMin
		}
		u.log.Warn("broker connection lost; reconnecting", "err", err, "up_for", time.Since(up).Round(time.Millisecond).String(), "next_in", backoff.String())
		if !sleep(ctx, jitter(backoff)) {
			return nil
		}
		backoff = nextBackoff(backoff, u.opts.BackoffMax)
	}
}

func (u *Uplink) noteConnectErr(err error, next time.Duration) {
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
		u.log.Warn("cannot connect to the broker; retrying", "broker", u.opts.Broker, "err", err, "failures", n, "next_in", next.String())
	}
}

// nextBackoff doubles d up to limit.
func nextBackoff(d, limit time.Duration) time.Duration { return min(d*2, limit) }

// jitter spreads d by ±20% so a fleet does not reconnect in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// connect makes one connection attempt, then subscribes and publishes the
// online status. lost is signalled when paho reports the connection gone.
func (u *Uplink) connect(ctx context.Context) (mqtt.Client, <-chan error, error) {
	lost := make(chan error, 1)
	o := mqtt.NewClientOptions().
		AddBroker(u.opts.Broker).
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
		SetOrderMatters(true).
		SetBinaryWill(u.opts.StatusTopic, u.opts.Will(), 1, true).
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
		return nil, nil, fmt.Errorf("connect %s: %w", u.opts.Broker, err)
	}
	// Subscribe before announcing online: a dashboard that sees "online"
	// may send a command at once, and it must find the subscription.
	for _, s := range u.opts.Subscriptions {
		h := s.Handler
		tok := c.Subscribe(s.Topic, s.QoS, func(_ mqtt.Client, m mqtt.Message) { h(m.Topic(), m.Payload()) })
		if err := wait(ctx, tok, u.opts.ConnectTimeout); err != nil {
			c.Disconnect(0)
			return nil, nil, fmt.Errorf("subscribe %q: %w", s.Topic, err)
		}
	}
	if err := wait(ctx, c.Publish(u.opts.StatusTopic, 1, true, u.opts.Online()), u.opts.ConnectTimeout); err != nil {
		c.Disconnect(0)
		return nil, nil, fmt.Errorf("publish online status: %w", err)
	}
	u.connects.Add(1)
	u.mu.Lock()
	u.lastErr, u.connFailCount = "", 0
	u.mu.Unlock()
	u.cur.Store(&c)
	u.log.Info("connected to the broker", "broker", u.opts.Broker, "client_id", u.opts.ClientID)
	if u.opts.OnConnect != nil {
		u.opts.OnConnect()
	}
	return c, lost, nil
}

func wait(ctx context.Context, t mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-timer.C:
		return errors.New("timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

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
func (u *Uplink) shutdown(c mqtt.Client) {
	err := wait(context.Background(), c.Publish(u.opts.StatusTopic, 1, true, u.opts.Offline()), u.opts.ShutdownTimeout)
	if err != nil {
		u.log.Warn("offline status not acknowledged before disconnect", "err", err)
	}
	c.Disconnect(250)
	u.log.Info("disconnected from the broker")
}
