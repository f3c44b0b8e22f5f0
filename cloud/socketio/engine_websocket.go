package socketio

import (
	"errors"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/hub"
)

// serveWebSocket serves a WebSocket connection: a new session when sid is
// empty, else the upgrade of a long-polling session.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, sid string) {
	var sess *session
	if sid == "" {
		if !s.o.Admission.Wait(w, r) {
			return
		}
		sess = s.open(r)
		if sess == nil {
			s.stats.Refused.Add(1)
			http.Error(w, "server full or shutting down", http.StatusServiceUnavailable)
			return
		}
		conn, err := s.upgrader.Upgrade(w, r, nil)
		if err != nil {
			sess.close(reasonTransport) // Upgrade answered the client already
			return
		}
		conn.SetReadLimit(int64(s.o.MaxPayload))
		sess.mu.Lock()
		sess.ws = conn
		sess.mu.Unlock()
		// The session is in no room yet, so the open packet is first.
		sess.pushControl(s.openPacket(sess.sid, []string{}))
		s.run(sess, conn)
		return
	}
	sess = s.session(sid)
	if sess == nil {
		s.refuse(w, http.StatusBadRequest, errSessionUnknown)
		return
	}
	sess.mu.Lock()
	if sess.ws != nil || sess.probing {
		sess.mu.Unlock()
		s.refuse(w, http.StatusBadRequest, errBadRequest)
		return
	}
	sess.probing = true
	sess.mu.Unlock()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err == nil {
		conn.SetReadLimit(int64(s.o.MaxPayload))
		err = sess.probe(conn)
	}
	sess.mu.Lock()
	sess.probing = false
	sess.mu.Unlock()
	if err != nil {
		s.log.Debug("websocket upgrade failed", "sid", sid, "err", err)
		if conn != nil {
			_ = conn.Close()
		}
		return
	}
	s.stats.Upgrades.Add(1)
	sess.kickPoll()
	s.run(sess, conn)
}

// run serves a session on conn until it closes: the caller's goroutine
// reads, one writer goroutine owns every write.
func (s *Server) run(sess *session, conn *websocket.Conn) {
	s.wg.Add(1)
	defer s.wg.Done()
	s.stats.WebSockets.Add(1)
	defer s.stats.WebSockets.Add(-1)
	go sess.writer(conn)
	sess.reader(conn)
	<-sess.writerDone
}

// probe runs the upgrade of a long-polling session: 2probe → 3probe, then
// 5 (upgrade) switches the session to conn. A waiting GET is answered with
// noop so that the client can pause polling.
func (s *session) probe(conn *websocket.Conn) error {
	deadline := time.Now().Add(s.srv.o.UpgradeTimeout)
	_ = conn.SetReadDeadline(deadline)
	mt, b, err := conn.ReadMessage()
	if err != nil {
		return err
	}
	if mt != websocket.TextMessage || string(b) != "2probe" {
		return errors.New("probe: expected 2probe")
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.srv.o.WriteTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, []byte("3probe")); err != nil {
		return err
	}
	s.kickPoll()
	mt, b, err = conn.ReadMessage()
	if err != nil {
		return err
	}
	if mt != websocket.TextMessage || len(b) != 1 || b[0] != eioUpgrade {
		return errors.New("probe: expected the upgrade packet")
	}
	_ = conn.SetReadDeadline(time.Time{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed() {
		return errors.New("probe: session closed")
	}
	s.ws = conn
	return nil
}

// writer owns every write of conn: it drains the queue in batches, with a
// write deadline before every write, and sends the close frame at the end.
func (s *session) writer(conn *websocket.Conn) {
	defer close(s.writerDone)
	defer conn.Close()
	var batch []hub.Message
	var parts [][]byte
	for {
		if s.closed() {
			s.writeClose(conn)
			return
		}
		batch = s.q.Pop(batch[:0], s.srv.o.BatchBytes)
		drops := s.droppedFrames(nil)
		if len(batch) == 0 && len(drops) == 0 {
			select {
			case <-s.wake:
			case <-s.done:
			}
			continue
		}
		for i := range batch {
			m := &batch[i]
			if m.Stream != nil {
				var more, ok bool
				parts, more, ok = s.srv.hub.SnapshotGate().Part(m.Stream, parts, s.done,
					func(f []byte) bool { return s.write(conn, f) })
				if !ok {
					return
				}
				if !more {
					s.q.Done(m.Stream)
				}
				continue
			}
			if m.Room == closeRoom {
				s.close(reasonFlushed)
				break
			}
			if !s.write(conn, m.Frame) {
				return
			}
			s.sent(m)
			batch[i] = hub.Message{}
		}
		for _, f := range drops {
			if !s.write(conn, f) {
				return
			}
		}
	}
}

func (s *session) write(conn *websocket.Conn, frame []byte) bool {
	_ = conn.SetWriteDeadline(time.Now().Add(s.srv.o.WriteTimeout))
	if err := conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		s.close(reasonTransport)
		return false
	}
	return true
}

// writeClose sends the close frame of the session's close reason, if any.
func (s *session) writeClose(conn *websocket.Conn) {
	if s.why.code == 0 {
		return
	}
	msg := websocket.FormatCloseMessage(s.why.code, s.why.name)
	_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
}

// reader reads the client's packets until the connection fails or the
// session closes.
func (s *session) reader(conn *websocket.Conn) {
	for {
		mt, b, err := conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				s.srv.stats.BadPackets.Add(1)
				s.close(reasonTooLarge)
			} else {
				s.close(reasonTransport)
			}
			return
		}
		if mt != websocket.TextMessage {
			s.srv.stats.BadPackets.Add(1)
			s.inMu.Lock()
			s.up.binary()
			s.inMu.Unlock()
			continue
		}
		s.inMu.Lock()
		open := s.handle(b)
		s.inMu.Unlock()
		if !open {
			return
		}
	}
}
