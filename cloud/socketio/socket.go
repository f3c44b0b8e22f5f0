package socketio

import (
	"net/http"
	"sync/atomic"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
)

// socket is the Socket.IO v5 adapter on one Engine.IO session: namespace
// "/", the CONNECT's token, events and acks (events.go). It is the session's
// upper layer and its conn.Wire; its conn.Client is the hub.Subscriber.
type socket struct {
	srv  *Server
	sess *session
	sid  string
	cc   *conn.Client // the connection layer's side: principal, queue, limits, rooms, commands

	connected atomic.Bool // joined namespace "/"
	httpToken string      // the handshake request's bearer token or ?token=, the fallback of CONNECT's auth.token
}

func newSocket(srv *Server, sess *session, r *http.Request) *socket {
	s := &socket{srv: srv, sess: sess, sid: sess.sid}
	if r != nil {
		s.httpToken = auth.FromRequest(r)
	}
	s.cc = srv.layer.NewClient(s)
	return s
}

// upper, for the Engine.IO session.

func (s *socket) queue() *hub.Queue    { return s.cc.Q }
func (s *socket) send(m hub.Message)   { s.cc.Send(m) }
func (s *socket) message(data []byte)  { s.handleSIO(data) }
func (s *socket) accepted() bool       { return s.connected.Load() }
func (s *socket) gone()                { s.cc.Close() }
func (s *socket) binary()              { s.fail(-1, "", hub.CodeBadRequest, ErrBinary.Error()) }
func (s *socket) pushControl(b []byte) { s.sess.pushControl(b) }
func (s *socket) close(why closeReason) {
	s.sess.close(why)
}
func (s *socket) closeAfterFlush() { s.sess.closeAfterFlush() }

// Format implements conn.Wire.
func (s *socket) Format() hub.Format { return s.srv.format }

// Queued implements conn.Wire: wake the writer or the waiting GET.
func (s *socket) Queued() { s.sess.signal() }

// End implements conn.Wire. It may run on a hub shard, and closing leaves
// the hub: slow consumers close on their own goroutine.
func (s *socket) End(r conn.Reason) {
	switch r {
	case conn.ReasonSlowConsumer:
		go s.close(reasonSlow)
	case conn.ReasonTokenExpired:
		s.expire()
	}
}
