package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/hub"
)

// closeReason says why a session ends: a name for logs and the WebSocket
// close code (0: none, the connection just closes).
type closeReason struct {
	name string
	code int
}

var (
	reasonShutdown       = closeReason{"server shutting down", websocket.CloseGoingAway}
	reasonSlow           = closeReason{"slow consumer", 4008}
	reasonHeartbeat      = closeReason{"ping timeout", 0}
	reasonConnectTimeout = closeReason{"no Socket.IO connect in time", 0}
	reasonTooLarge       = closeReason{"payload too large", 0} // gorilla sends 1009 itself
	reasonParse          = closeReason{"parse error", websocket.CloseProtocolError}
	reasonClientClose    = closeReason{"client close", 0}
	reasonDisconnect     = closeReason{"client namespace disconnect", websocket.CloseNormalClosure}
	reasonTransport      = closeReason{"transport error", 0}
	reasonOverlap        = closeReason{"overlapping long-polling GETs", 0}
	reasonFlushed        = closeReason{"server disconnect", websocket.CloseNormalClosure}
)

// closeRoom marks the queued message after which the session closes
// (closeAfterFlush); its frame is the Engine.IO close packet, which is what
// a long-polling client must read last.
const closeRoom = "\x00close"

// session is one Engine.IO session: transports (long-polling, WebSocket,
// upgrade), heartbeat, close. It knows nothing of Socket.IO: it hands the
// data of message packets to its upper layer (the Socket.IO socket) and
// writes what the upper layer's queue holds.
type session struct {
	srv *Server
	sid string
	up  upper      // the Socket.IO socket on this session
	q   *hub.Queue // up.queue(), drained by the writer or the waiting GET

	// wake is signalled after every push. The queue's own Wake channel is
	// not used: a long-polling GET that consumed a signal it could not use
	// (the session moved to WebSocket) must be able to pass it on.
	wake       chan struct{}
	done       chan struct{} // closed by close
	closeOnce  sync.Once
	why        closeReason   // written before done is closed
	writerDone chan struct{} // closed when the WebSocket writer has returned

	mu       sync.Mutex // guards the fields below
	ws       *websocket.Conn
	probing  bool          // a WebSocket is upgrading the session
	polling  bool          // a long-polling GET is waiting
	kick     chan struct{} // cap 1: makes the waiting GET answer noop
	created  time.Time
	pingSent time.Time // zero when no ping is outstanding
	nextPing time.Time

	pendingAddr *string // the client address while the upper layer has not accepted the session (guarded by srv.mu)

	inMu sync.Mutex // serializes inbound packets
}

// upper is what an Engine.IO session carries (the Socket.IO socket).
type upper interface {
	// queue is what the session's transports drain.
	queue() *hub.Queue
	// send queues a frame (with the upper layer's slow-consumer policy).
	send(m hub.Message)
	// message handles the data of one inbound message packet; calls are
	// serialized.
	message(data []byte)
	// binary answers an inbound binary packet, which is not supported.
	binary()
	// accepted reports whether the upper layer accepted the session (a
	// Socket.IO CONNECT): until then the connect timeout runs.
	accepted() bool
	// gone is called once when the session has ended.
	gone()
}

// newSession returns a session; up makes its upper layer (r: the
// handshake request, nil in tests).
func newSession(srv *Server, r *http.Request) *session {
	now := time.Now()
	s := &session{
		srv: srv, sid: newSID(),
		wake: make(chan struct{}, 1), done: make(chan struct{}), writerDone: make(chan struct{}),
		kick: make(chan struct{}, 1), created: now, nextPing: now.Add(srv.o.PingInterval),
	}
	s.up = srv.newUpper(s, r)
	s.q = s.up.queue()
	return s
}

// push queues m through the upper layer (its slow-consumer policy).
func (s *session) push(m hub.Message) { s.up.send(m) }

// pushControl queues a frame that answers the client (or an Engine.IO
// packet); control frames are never dropped as lossy.
func (s *session) pushControl(frame []byte) { s.push(hub.Message{Frame: frame}) }

func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// closeAfterFlush closes the session once what is queued now has been
// written.
func (s *session) closeAfterFlush() {
	s.push(hub.Message{Room: closeRoom, Frame: []byte{eioClose}})
}

// close ends the session: it leaves the hub and the session table and
// discards its queue; a waiting GET answers with the close packet and the
// WebSocket writer sends the close frame. The first call wins. It must not
// be called with the hub's lock held.
func (s *session) close(why closeReason) {
	s.closeOnce.Do(func() {
		s.why = why
		close(s.done)
		s.up.gone() // first: once the session is out of the table, it is out of every room
		s.srv.remove(s)
		s.srv.log.Debug("session closed", "sid", s.sid, "reason", why.name)
	})
}

func (s *session) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// heartbeat runs on Run's ticker: it sends the ping when due and closes a
// session that missed its pong or never joined the namespace.
func (s *session) heartbeat(now time.Time) {
	var why *closeReason
	ping := false
	s.mu.Lock()
	switch {
	case !s.up.accepted() && now.Sub(s.created) > s.srv.o.ConnectTimeout:
		why = &reasonConnectTimeout
	case !s.pingSent.IsZero():
		if now.Sub(s.pingSent) > s.srv.o.PingTimeout {
			why = &reasonHeartbeat
		}
	case !now.Before(s.nextPing):
		s.pingSent, ping = now, true
	}
	s.mu.Unlock()
	if why != nil {
		s.srv.stats.HeartbeatTimeouts.Add(1)
		s.close(*why)
		return
	}
	if ping {
		s.pushControl([]byte{eioPing})
	}
}

func (s *session) pong() {
	s.srv.stats.Pongs.Add(1)
	now := time.Now()
	s.mu.Lock()
	s.pingSent = time.Time{}
	s.nextPing = now.Add(s.srv.o.PingInterval)
	s.mu.Unlock()
}

// kickPoll makes a waiting long-polling GET answer noop at once (during an
// upgrade, so the client can pause polling).
func (s *session) kickPoll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.polling {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// poll serves a long-polling GET: it waits until something is queued and
// answers with up to BatchBytes of packets joined by the record separator.
func (s *session) poll(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	switch {
	case s.ws != nil:
		s.mu.Unlock()
		s.srv.refuse(w, http.StatusBadRequest, errBadRequest)
		return
	case s.polling:
		s.mu.Unlock()
		s.close(reasonOverlap)
		s.srv.refuse(w, http.StatusBadRequest, errBadRequest)
		return
	}
	s.polling = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.polling = false
		s.mu.Unlock()
	}()
	var batch []hub.Message
	for {
		if s.closed() {
			s.respond(w, []byte{eioClose})
			return
		}
		batch = s.q.Pop(batch[:0], s.srv.o.BatchBytes)
		if drops := s.droppedFrames(nil); len(batch) > 0 || len(drops) > 0 {
			s.writePoll(w, batch, drops)
			return
		}
		select {
		case <-s.wake:
		case <-s.kick:
			s.respond(w, []byte{eioNoop})
			return
		case <-s.done:
		case <-r.Context().Done():
			return
		}
	}
}

func (s *session) writePoll(w http.ResponseWriter, batch []hub.Message, drops [][]byte) {
	if s.q.Len() > 0 {
		s.signal() // more than one batch: the next GET must not wait
	}
	var buf bytes.Buffer
	flushed := false
	for i := range batch {
		m := &batch[i]
		if m.Stream != nil {
			// The part goes into the poll's answer, sent after the loop.
			_, more, ok := s.srv.hub.SnapshotGate().Part(m.Stream, nil, s.done, func(p []byte) bool {
				if buf.Len() > 0 {
					buf.WriteByte(recordSep)
				}
				buf.Write(p)
				return true
			})
			if !ok {
				return
			}
			if !more {
				s.q.Done(m.Stream)
			}
			continue
		}
		if buf.Len() > 0 {
			buf.WriteByte(recordSep)
		}
		buf.Write(m.Frame)
		s.sent(m)
		if m.Room == closeRoom {
			flushed = true
			break
		}
	}
	if !flushed {
		for _, f := range drops {
			if buf.Len() > 0 {
				buf.WriteByte(recordSep)
			}
			buf.Write(f)
		}
	}
	s.respond(w, buf.Bytes())
	if flushed {
		s.close(reasonFlushed)
	}
}

// respond writes a long-polling answer. The poll may have waited longer
// than the HTTP server's WriteTimeout, so the write gets its own deadline.
func (s *session) respond(w http.ResponseWriter, b []byte) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.srv.o.WriteTimeout))
	writePayload(w, b)
}

// sent counts a written message.
func (s *session) sent(m *hub.Message) {
	if !m.TS.IsZero() {
		s.srv.hstats.MessagesOut.Add(1)
		s.srv.o.Observe(time.Since(m.TS).Seconds())
	}
}

// droppedFrames returns `dropped` {room, count} events for the frames the
// queue dropped for this client, once it is back under its high-water mark.
func (s *session) droppedFrames(out [][]byte) [][]byte {
	for room, n := range s.q.TakeDropped() {
		b, _ := json.Marshal(droppedPayload{Room: room, Count: n})
		out = append(out, AppendEvent(nil, "dropped", b))
	}
	return out
}

// post serves a long-polling POST: the client's packets.
func (s *session) post(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	upgraded := s.ws != nil
	s.mu.Unlock()
	if upgraded {
		s.srv.refuse(w, http.StatusBadRequest, errBadRequest)
		return
	}
	body, err := readBody(r, w, s.srv.o.MaxPayload)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			s.srv.stats.BadPackets.Add(1)
			s.close(reasonTooLarge)
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		s.srv.refuse(w, http.StatusBadRequest, errBadRequest)
		return
	}
	s.inMu.Lock()
	for _, pkt := range SplitPayload(body) {
		if !s.handle(pkt) {
			break
		}
	}
	s.inMu.Unlock()
	w.Header().Set("Content-Type", "text/html")
	_, _ = w.Write([]byte("ok"))
}

// handle processes one inbound Engine.IO packet and reports whether the
// session is still open. Called with inMu held.
func (s *session) handle(pkt []byte) bool {
	if s.closed() {
		return false
	}
	p, err := DecodeEIO(pkt)
	if err != nil {
		s.srv.stats.BadPackets.Add(1)
		if errors.Is(err, ErrBinary) {
			s.up.binary()
			return true
		}
		s.srv.warnf("parse:"+s.sid, "closing Socket.IO session on an undecodable packet", "sid", s.sid, "err", err)
		s.close(reasonParse)
		return false
	}
	switch p.Type {
	case eioPong:
		s.pong()
	case eioPing:
		s.pushControl(append([]byte{eioPong}, p.Data...))
	case eioMessage:
		s.up.message(p.Data)
	case eioClose:
		s.close(reasonClientClose)
		return false
	case eioNoop:
	default: // open, upgrade: only the server or a probe sends these
		s.srv.stats.BadPackets.Add(1)
		s.close(reasonParse)
		return false
	}
	return !s.closed()
}
