package wsapi

import (
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

var jsonFormat hub.Format = JSON{}

// client is one WebSocket connection. One reader goroutine reads and
// answers ops for the connection's whole life. Writes need no goroutine
// while the client is idle: a Send that finds the queue idle starts a drain
// goroutine, which writes batches until the queue is empty and then exits
// (writing guarantees at most one). Pings come from a timer, and closing
// runs on its own goroutine; both use WriteControl, which gorilla allows
// concurrently with the drain's writes. An idle connection thus costs one
// parked goroutine, a timer and its buffers.
//
// What a connection is beyond bytes (principal, queue, limits, rooms,
// commands) is its conn.Client; client is the /ws codec and transport.
type client struct {
	h    *Handler
	conn *websocket.Conn
	cc   *conn.Client
	p    *auth.Principal
	id   string
	q    *hub.Queue

	done       chan struct{} // closed once the connection is closed and the queue released
	readerDone chan struct{} // closed when the reader has returned
	closing    chan struct{} // closed by closeWith
	closeOnce  sync.Once
	closeCode  int // written before closing is closed; -1 means no close frame
	closeText  string
	writing    atomic.Bool // a drain goroutine is running
	pinger     *time.Timer
}

func newClient(h *Handler, ws *websocket.Conn, p *auth.Principal) *client {
	c := &client{h: h, conn: ws, p: p,
		done: make(chan struct{}), readerDone: make(chan struct{}), closing: make(chan struct{})}
	c.cc = h.layer.NewClient(c)
	c.id, c.q = c.cc.ID, c.cc.Q
	c.startPinger()
	// Last: a token about to expire ends the client at once, and shutdown
	// needs the pinger and the queue.
	c.cc.Authenticate(p)
	return c
}

// Format implements conn.Wire.
func (c *client) Format() hub.Format { return jsonFormat }

// Queued implements conn.Wire: a frame waits, so a drain goroutine must run.
func (c *client) Queued() {
	if c.writing.CompareAndSwap(false, true) {
		go c.drain()
	}
}

// End implements conn.Wire.
func (c *client) End(r conn.Reason) {
	switch r {
	case conn.ReasonSlowConsumer:
		c.closeWith(CloseSlowConsumer, "slow consumer")
		// The writer is likely blocked on a full socket: cut that write
		// short so the client is gone now, not after WriteTimeout.
		_ = c.conn.NetConn().SetWriteDeadline(time.Now())
	case conn.ReasonTokenExpired:
		c.closeWith(CloseTokenExpired, "token expired")
	}
}

// Snapshot implements conn.Wire.
func (c *client) Snapshot(op conn.Op, parts *hub.Parts) hub.Stream {
	ref, _ := op.Ref.(json.RawMessage)
	return &snapshotStream{parts: parts, ref: ref}
}

// Encode implements conn.Wire: the /ws frame of a result.
func (c *client) Encode(op conn.Op, r conn.Result) [][]byte {
	ref, _ := op.Ref.(json.RawMessage)
	var f any
	switch r.Kind {
	case conn.Unsubscribed:
		f = unsubscribedFrame{Type: "unsubscribed", Room: clip(r.Room), Ref: ref}
	case conn.Pong:
		f = pongFrame{Type: "pong", Ref: ref, ServerTime: serverTime()}
	case conn.CommandReply:
		res := r.Reply
		f = commandReplyFrame{Type: "command_reply", Ref: ref, OK: res.Reply.OK, Result: command.MarshalResult(res.Reply),
			Error: res.Reply.Error, CommandID: res.CommandID, Robot: r.Robot, Reply: res.Raw}
	default:
		room := ""
		if op.Kind == conn.OpSubscribe {
			room = clip(r.Room)
		}
		f = errorFrame{Type: "error", Code: r.Code, Message: r.Message, Ref: ref, Room: room, Robot: r.Robot}
	}
	return [][]byte{mustJSON(f)}
}

// drainLinger is how long an emptied drain goroutine waits for more frames
// before it exits, so busy clients keep one writer and idle ones none
// (100 ms: long enough to span the gaps of a busy stream, short enough
// that a burst of connects does not keep thousands of writers alive).
const drainLinger = 100 * time.Millisecond

// closeGrace bounds how long a closing connection may linger: a writer
// blocked on a full socket cannot see the close request, so the socket is
// closed under it.
const closeGrace = 2 * time.Second

func (c *client) sendControl(b []byte) { c.cc.Control(b) }

// closeWith asks the writer to send a close frame with code (-1: none) and
// close the connection. The first call wins.
func (c *client) closeWith(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.closing)
		time.AfterFunc(closeGrace, func() { _ = c.conn.NetConn().Close() })
		go c.shutdown()
	})
}

// startPinger pings every Heartbeat until the connection closes. newClient
// calls it, before the client is shared.
func (c *client) startPinger() {
	c.pinger = time.AfterFunc(c.h.o.Heartbeat, func() {
		select {
		case <-c.closing:
			return
		default:
		}
		if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.h.o.WriteTimeout)); err != nil {
			c.closeWith(-1, "")
			return
		}
		c.pinger.Reset(c.h.o.Heartbeat)
	})
}

// shutdown waits for a running drain to stop, sends the close frame and
// closes the connection.
func (c *client) shutdown() {
	c.pinger.Stop()
	for deadline := time.Now().Add(closeGrace); c.writing.Load() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	c.writeClose()
	_ = c.conn.Close()
	c.q.Close()
	close(c.done)
}

// drain writes queued frames until the queue is empty, then exits. Only
// the goroutine that set writing runs it.
func (c *client) drain() {
	var batch []hub.Message
	var parts [][]byte
	var idle *time.Timer
	var active time.Time // when the queue last ran empty
drain:
	for {
		select {
		case <-c.closing:
			c.writing.Store(false)
			return
		default:
		}
		batch = c.q.Pop(batch[:0], c.h.o.BatchBytes)
		bc, _ := c.conn.NetConn().(*batchConn)
		if bc != nil && len(batch) > 1 {
			bc.begin() // one syscall for the whole batch
		}
		if len(batch) > 0 {
			// One deadline for the batch's frames (snapshot parts, paced,
			// set their own): a deadline is a runtime timer, per frame it
			// showed in the fan-out profile.
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.h.o.WriteTimeout))
		}
		for i := range batch {
			if st := batch[i].Stream; st != nil {
				var more, ok bool
				parts, more, ok = c.h.o.Hub.SnapshotGate().Part(st, parts, c.closing, c.write)
				if !ok {
					c.writing.Store(false)
					return
				}
				if !more {
					c.q.Done(st)
				}
				continue
			}
			if !c.writeFrame(batch[i].Frame) {
				c.writing.Store(false)
				return
			}
			batch[i].Frame = nil
		}
		for room, n := range c.q.TakeDropped() {
			if !c.writeFrame(mustJSON(droppedFrame{Type: "dropped", Room: room, Count: n})) {
				c.writing.Store(false)
				return
			}
		}
		if bc != nil {
			if err := bc.end(); err != nil {
				c.closeWith(-1, "")
				c.writing.Store(false)
				return
			}
		}
		events := int64(0)
		for i := range batch {
			if !batch[i].TS.IsZero() {
				events++
				c.h.o.Observe(time.Since(batch[i].TS).Seconds())
			}
			batch[i] = hub.Message{}
		}
		if events > 0 {
			c.h.stats.MessagesOut.Add(events) // one add per batch: the counter is shared by every writer
		}
		if len(batch) > 0 {
			continue
		}
		// Empty: linger a moment, since a busy client would otherwise
		// start a goroutine per event, then stop — unless a Send queued
		// something after the Pop and saw writing still set.
		// The timer is armed once and re-armed only when it fires early
		// (the queue ran empty again since): a Reset per frame was a
		// runtime timer operation per delivery.
		active = time.Now()
		if idle == nil {
			idle = time.NewTimer(drainLinger)
			defer idle.Stop()
		}
	linger:
		for {
			select {
			case <-c.q.Wake():
				continue drain
			case <-c.closing:
				c.writing.Store(false)
				return
			case <-idle.C:
				if left := drainLinger - time.Since(active); left > 0 {
					idle.Reset(left)
					continue linger
				}
			}
			break
		}
		c.writing.Store(false)
		if c.q.Len() == 0 || !c.writing.CompareAndSwap(false, true) {
			return
		}
	}
}

// write sets the write deadline and writes one frame (snapshot parts).
func (c *client) write(frame []byte) bool {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.h.o.WriteTimeout))
	return c.writeFrame(frame)
}

// writeFrame writes one frame under the deadline already set.
func (c *client) writeFrame(frame []byte) bool {
	if err := c.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.closeWith(-1, "")
		return false
	}
	return true
}

// writeClose sends the close frame and gives the peer a moment to answer it
// before the connection is closed, so the frame is not lost to a reset.
func (c *client) writeClose() {
	if c.closeCode < 0 {
		return
	}
	msg := websocket.FormatCloseMessage(c.closeCode, c.closeText)
	if err := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		return
	}
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
}

// sendConnected queues the connected frame, the first frame of every
// connection.
func (c *client) sendConnected() {
	cf := connectedFrame{Type: "connected", ClientID: c.id, ServerTime: serverTime(),
		HeartbeatS: c.h.o.Heartbeat.Seconds(), Role: string(c.p.Role), Robots: c.p.Robots}
	if !c.p.ExpiresAt.IsZero() {
		s := protocol.T(c.p.ExpiresAt).String()
		cf.Expires = &s
	}
	c.sendControl(mustJSON(cf))
}

func (c *client) runReader() {
	defer close(c.readerDone)
	defer c.cc.Close()
	conn := c.conn
	dead := c.h.o.Heartbeat + c.h.o.ClientGrace
	alive := func() { _ = conn.SetReadDeadline(time.Now().Add(dead)) }
	conn.SetReadLimit(c.h.o.ReadLimit)
	alive()
	conn.SetPongHandler(func(string) error { alive(); return nil })
	conn.SetPingHandler(func(data string) error {
		alive()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(c.h.o.WriteTimeout))
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || isTimeout(err) {
			return nil
		}
		return err
	})
	for {
		mt, data, err := conn.ReadMessage()
		if err != nil {
			switch {
			case errors.Is(err, websocket.ErrReadLimit):
				// gorilla already sent 1009. Drain what the peer still sends
				// for a moment: closing with unread data would reset the
				// connection and could lose the close frame.
				_ = conn.NetConn().SetReadDeadline(time.Now().Add(time.Second))
				_, _ = io.Copy(io.Discard, io.LimitReader(conn.NetConn(), 4<<20))
				c.closeWith(-1, "")
			case isTimeout(err):
				c.closeWith(CloseHeartbeatTimeout, "heartbeat timeout")
			case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
				c.closeWith(-1, "") // the peer closed; gorilla answered it
			default:
				c.closeWith(-1, "")
			}
			return
		}
		alive()
		select {
		case <-c.closing:
			return
		default:
		}
		if mt != websocket.TextMessage {
			c.sendError(hub.CodeBadRequest, "binary frames are not supported; send JSON text frames", nil)
			continue
		}
		// Handle the op on a short-lived goroutine: subscribe and command
		// run deep (snapshots, JSON encoding), and a stack grown here would
		// stay with the idle connection. Ops are rate limited, so the extra
		// goroutine per op is cheap.
		done := make(chan struct{})
		go func() { defer close(done); c.handle(data) }()
		<-done
	}
}

func (c *client) sendError(code, msg string, ref []byte) {
	c.sendControl(mustJSON(errorFrame{Type: "error", Code: code, Message: msg, Ref: ref}))
}

// handle decodes one frame into an op for the connection layer.
func (c *client) handle(data []byte) {
	op, err := DecodeOp(data)
	if !c.cc.Allow() {
		c.sendError(hub.CodeRateLimited, "too many ops; slow down", op.Ref)
		return
	}
	if err != nil {
		c.sendError(hub.CodeBadRequest, err.Error(), op.Ref)
		return
	}
	cop := conn.Op{Room: op.Room, SinceSeq: -1, Robot: op.Robot, Name: op.Name, Args: op.Args, Ref: op.Ref}
	if op.SinceSeq != nil {
		cop.SinceSeq = *op.SinceSeq
	}
	switch op.Op {
	case OpSubscribe:
		cop.Kind = conn.OpSubscribe
	case OpUnsubscribe:
		cop.Kind = conn.OpUnsubscribe
	case OpPing:
		cop.Kind = conn.OpPing
	case OpCommand:
		cop.Kind = conn.OpCommand
	}
	c.cc.Do(cop)
}
