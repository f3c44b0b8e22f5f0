// Package conn is the relay's connection layer, shared by both wire
// formats (/ws JSON and Socket.IO): a Client owns what a dashboard
// connection is beyond its bytes on the wire — the principal and its grant,
// the byte-capped queue and the slow-consumer policy, the op rate limit,
// token expiry, room membership with snapshots and since_seq resume, and
// command submission — and turns typed ops into typed results. A wire
// format (package wsapi, package socketio) is a codec plus a transport: it
// decodes frames into Ops, encodes Results and snapshot Streams, and writes
// what the queue holds.
package conn

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/internal/ratelog"
	"github.com/robotfleet/fleetlink/protocol"
)

// Options configures a Layer. Zero fields take the defaults named here.
type Options struct {
	// Hub routes events. Required.
	Hub *hub.Hub
	// Commands carries command ops; nil answers them with code internal.
	Commands *command.Tracker
	// QueueBytes caps one client's queue. Default 1 MiB.
	QueueBytes int
	// OpsPerSecond is the sustained op rate per client; more get
	// rate_limited. Default 20.
	OpsPerSecond float64
	// OpsBurst is the op burst per client. Default 2 × OpsPerSecond.
	OpsBurst float64
	// Warn logs rate-limited warnings (slow consumers, failed commands).
	// Required.
	Warn *ratelog.Logger
}

// Layer makes the Clients of one wire format.
type Layer struct {
	o     Options
	stats Stats
}

// Stats are one wire format's connection counters. All fields are atomic.
type Stats struct {
	Connections atomic.Int64 // open connections
	MessagesOut atomic.Int64 // event frames written to clients
	SlowCloses  atomic.Int64 // clients closed as slow consumers (4008)
	Queues      hub.QueueStats
}

// Stats returns the layer's counters; the wire format counts its
// connections and writes in them.
func (l *Layer) Stats() *Stats { return &l.stats }

// New returns a Layer, or ErrOption naming a missing required option.
func New(o Options) (*Layer, error) {
	switch {
	case o.Hub == nil:
		return nil, fmt.Errorf("%w: Hub is required", ErrOption)
	case o.Warn == nil:
		return nil, fmt.Errorf("%w: Warn is required", ErrOption)
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 1 << 20
	}
	if o.OpsPerSecond <= 0 {
		o.OpsPerSecond = 20
	}
	if o.OpsBurst <= 0 {
		o.OpsBurst = 2 * o.OpsPerSecond
	}
	return &Layer{o: o}, nil
}

// ErrOption: a required option is missing.
var ErrOption = errors.New("conn: bad options")

// Hub returns the hub.
func (l *Layer) Hub() *hub.Hub { return l.o.Hub }

// Reason says why the layer asks a wire to end a connection.
type Reason int

// Reasons.
const (
	ReasonSlowConsumer Reason = iota // the queue passed its byte cap (4008)
	ReasonTokenExpired               // the token's exp passed (4001, or Socket.IO error + disconnect)
)

// Wire is what a wire format gives its Clients.
type Wire interface {
	// Format encodes events for this wire format.
	Format() hub.Format
	// Snapshot returns the Stream that answers a successful subscribe op
	// with the snapshot's parts.
	Snapshot(op Op, parts *hub.Parts) hub.Stream
	// Encode returns the frames that answer op with r.
	Encode(op Op, r Result) [][]byte
	// Queued is called after a frame was queued (wake the writer).
	Queued()
	// End ends the connection for reason. It must not block.
	End(reason Reason)
}

// Kind is an op's kind.
type Kind int

// Op kinds (spec §5 ops, and the Socket.IO events that map to them).
const (
	OpSubscribe Kind = iota
	OpUnsubscribe
	OpPing
	OpCommand
)

// Op is one decoded client request. Ref is the wire's own correlation
// (a /ws ref, a Socket.IO ack id and event name), handed back to Encode.
type Op struct {
	Kind     Kind
	Room     string
	SinceSeq int64 // < 0: none
	Robot    string
	Name     string
	Args     map[string]any
	Ref      any
}

// ResultKind is a result's kind.
type ResultKind int

// Result kinds.
const (
	Subscribed ResultKind = iota // answered through Wire.Snapshot, never Encode
	Unsubscribed
	Pong
	CommandReply
	Error
)

// Result is the typed answer to an Op.
type Result struct {
	Kind    ResultKind
	Room    string
	Robot   string
	Code    string // Error: a protocol client error code
	Message string
	Reply   command.Result // CommandReply
}

// Client is one dashboard connection of some wire format; it is the
// hub.Subscriber of that connection.
type Client struct {
	// ID is the client id of the connected frame.
	ID string
	// Q is the outgoing queue the wire's writer drains.
	Q *hub.Queue

	l      *Layer
	w      Wire
	ops    *rate.Limiter
	p      *auth.Principal
	grant  hub.Authorizer
	expiry *time.Timer
	once   sync.Once
	done   chan struct{}
}

// NewClient returns a Client of wire w; Authenticate gives it a principal.
func (l *Layer) NewClient(w Wire) *Client {
	return &Client{ID: "c-" + protocol.NewID(), Q: hub.NewQueue(l.o.QueueBytes, &l.stats.Queues), l: l, w: w,
		ops: rate.NewLimiter(rate.Limit(l.o.OpsPerSecond), int(l.o.OpsBurst)), done: make(chan struct{})}
}

// Authenticate sets the client's principal (before any op) and starts the
// token's expiry: when it passes, the wire ends the connection.
func (c *Client) Authenticate(p *auth.Principal) {
	c.p, c.grant = p, hub.Grant(p, p.Robots)
	if !p.ExpiresAt.IsZero() {
		c.expiry = time.AfterFunc(time.Until(p.ExpiresAt), func() { c.w.End(ReasonTokenExpired) })
	}
}

// Principal returns the principal (nil before Authenticate).
func (c *Client) Principal() *auth.Principal { return c.p }

// Format implements hub.Subscriber.
func (c *Client) Format() hub.Format { return c.w.Format() }

// Send implements hub.Subscriber: it queues m without blocking and applies
// the slow-consumer policy (hub.Queue): past the cap the wire ends the
// connection.
func (c *Client) Send(m hub.Message) {
	switch c.Q.Push(m) {
	case hub.Queued, hub.Replaced:
		c.w.Queued()
	case hub.Overflow:
		c.l.stats.SlowCloses.Add(1)
		sub := ""
		if c.p != nil {
			sub = c.p.Subject
		}
		c.l.o.Warn.Warn("slow", "closing slow consumer", "client", c.ID, "sub", sub, "queue_bytes", c.Q.Len())
		c.w.End(ReasonSlowConsumer)
	}
}

// Control queues frames that answer the client (never dropped as lossy).
func (c *Client) Control(frames ...[]byte) {
	for _, f := range frames {
		c.Send(hub.Message{Frame: f})
	}
}

// Allow takes one op from the client's rate limit.
func (c *Client) Allow() bool { return c.ops.Allow() }

// Fail answers op with an error.
func (c *Client) Fail(op Op, code, msg string) {
	c.Control(c.w.Encode(op, Result{Kind: Error, Code: code, Message: msg, Room: op.Room, Robot: op.Robot})...)
}

// Do carries out op and queues its answer; a command's answer comes later,
// when the robot replies or times out.
func (c *Client) Do(op Op) {
	h := c.l.o.Hub
	switch op.Kind {
	case OpSubscribe:
		err := h.Subscribe(c, c.grant, op.Room, op.SinceSeq, func(s hub.Snapshot) {
			parts := hub.NewParts(s)
			c.Send(hub.Message{Stream: c.w.Snapshot(op, parts), Bytes: parts.Bytes()})
		})
		if err != nil {
			c.Fail(op, hub.Code(err), "subscribe "+clip(op.Room)+": "+err.Error())
			return
		}
		if c.closed() {
			// Close may have left the hub just before Subscribe joined:
			// leave again so that no closed client stays in a room.
			h.Leave(c)
		}
	case OpUnsubscribe:
		h.Unsubscribe(c, op.Room)
		c.Control(c.w.Encode(op, Result{Kind: Unsubscribed, Room: op.Room})...)
	case OpPing:
		c.Control(c.w.Encode(op, Result{Kind: Pong})...)
	case OpCommand:
		c.l.o.Commands.Submit(c.p, c.p.Subject, op.Robot, op.Name, op.Args, func(res command.Result) {
			c.Control(c.w.Encode(op, Result{Kind: CommandReply, Robot: op.Robot, Reply: res})...)
		}, func(code, msg string, err error) {
			if err != nil {
				c.l.o.Warn.Warn("command", "command failed", "client", c.ID, "robot", op.Robot, "err", err)
			}
			c.Fail(op, code, msg)
		})
	}
}

// Close leaves every room, discards the queue and stops the expiry; the
// first call wins. Call it once the transport is gone, never from a hub
// callback.
func (c *Client) Close() {
	c.once.Do(func() {
		close(c.done)
		if c.expiry != nil {
			c.expiry.Stop()
		}
		c.l.o.Hub.Leave(c)
		c.Q.Close()
	})
}

func (c *Client) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// clip bounds client-supplied text echoed in messages.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Counts is a reading of Stats, to add up over wire formats.
type Counts struct {
	Connections, MessagesOut, SlowCloses, Dropped, Replaced, QueueBytes int64
}

// Counts reads the counters.
func (s *Stats) Counts() Counts {
	return Counts{Connections: s.Connections.Load(), MessagesOut: s.MessagesOut.Load(), SlowCloses: s.SlowCloses.Load(),
		Dropped: s.Queues.Dropped.Load(), Replaced: s.Queues.Replaced.Load(), QueueBytes: s.Queues.Bytes.Load()}
}

// Add returns the sum of c and o.
func (c Counts) Add(o Counts) Counts {
	return Counts{c.Connections + o.Connections, c.MessagesOut + o.MessagesOut, c.SlowCloses + o.SlowCloses,
		c.Dropped + o.Dropped, c.Replaced + o.Replaced, c.QueueBytes + o.QueueBytes}
}
