// Package socketio is the relay's Socket.IO endpoint at /socket.io/ (spec
// §6): an Engine.IO v4 server (long-polling and WebSocket transports,
// upgrade from polling, server-driven heartbeat, payload limits, a bounded
// session table) carrying Socket.IO v5 on namespace "/", as a thin adapter
// over the hub. Dashboards written against the Python Socket.IO server
// connect with the stock socket.io-client.
//
// Each session is a hub.Subscriber with one byte-capped hub.Queue holding
// ready Engine.IO packets. Events are encoded once per event by Format
// (42["session_progress",{envelope}]) before the hub's fan-out. The queue is
// drained by one writer goroutine per WebSocket connection, or by the next
// long-polling GET. A queue past its cap closes the session as a slow
// consumer, like /ws.
package socketio

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/internal/ratelog"
)

// Authenticator turns the token of a CONNECT packet's auth object into a
// principal. *auth.Authenticator implements it; with auth off it returns
// auth.Anonymous() for every token.
type Authenticator interface {
	Authenticate(token string) (*auth.Principal, error)
}

// Options configures a Server. Zero fields take the defaults named here,
// filled in by setDefaults.
type Options struct {
	// Hub routes events. Required.
	Hub *hub.Hub
	// Auth checks the CONNECT token. Required.
	Auth Authenticator
	// Commands carries `command` events; nil answers them with code internal.
	Commands *command.Tracker
	// Admission paces new Engine.IO sessions (handshakes and direct
	// WebSocket connections; upgrades and polls of a session are not new).
	// Nil: no pacing.
	Admission *conn.Admission
	// CheckOrigin accepts or refuses a browser's Origin. Default: requests
	// without an Origin header, and origins whose host is the request's Host.
	CheckOrigin func(r *http.Request) bool
	// PingInterval is the Engine.IO server ping period. Default 25s.
	PingInterval time.Duration
	// PingTimeout: a session that does not answer a ping within it is
	// closed. Default 20s.
	PingTimeout time.Duration
	// ConnectTimeout: an Engine.IO session that has not joined namespace "/"
	// within it is closed. Default 10s (stock clients join at once; the
	// reference server's 45s let a handshake flood hold the table).
	ConnectTimeout time.Duration
	// MaxPending caps the sessions that have not joined namespace "/" yet
	// (unauthenticated): a handshake flood fills this, not the session
	// table. Default 1000.
	MaxPending int
	// MaxPendingPerAddr caps one client address's sessions that have not
	// joined yet. Behind a proxy every client shares its address: raise it.
	// Default 16.
	MaxPendingPerAddr int
	// UpgradeTimeout: a WebSocket probe that does not complete the upgrade
	// within it is dropped (the session stays on polling). Default 10s.
	UpgradeTimeout time.Duration
	// MaxPayload is the largest inbound payload: one long-polling POST body
	// or one WebSocket message. Larger closes the session. Advertised in the
	// handshake. Default 64 KiB.
	MaxPayload int
	// QueueBytes caps one session's outgoing queue. Default 1 MiB.
	QueueBytes int
	// BatchBytes is how much one long-polling response or one writer
	// wake-up takes from the queue. Default 64 KiB.
	BatchBytes int
	// WriteTimeout is the deadline of every WebSocket write. Default 10s.
	WriteTimeout time.Duration
	// MaxSessions caps the session table; handshakes past it get 503.
	// Default 100000.
	MaxSessions int
	// OpsPerSecond is the sustained event rate per client; more get
	// rate_limited. Default 20.
	OpsPerSecond float64
	// OpsBurst is the event burst per client. Default 2 × OpsPerSecond.
	OpsBurst float64
	// Observe receives the fan-out latency (event ts to write) of each
	// event frame, in seconds. Default: none.
	Observe func(seconds float64)
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.CheckOrigin == nil {
		o.CheckOrigin = SameOrigin
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 25 * time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 20 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1000
	}
	if o.MaxPendingPerAddr <= 0 {
		o.MaxPendingPerAddr = 16
	}
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = 10 * time.Second
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = 64 << 10
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 1 << 20
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 64 << 10
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 100000
	}
	if o.OpsPerSecond <= 0 {
		o.OpsPerSecond = 20
	}
	if o.OpsBurst <= 0 {
		o.OpsBurst = 2 * o.OpsPerSecond
	}
	if o.Observe == nil {
		o.Observe = func(float64) {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// SameOrigin is the default CheckOrigin (conn.SameOrigin): no Origin
// header (not a browser), or an Origin whose host is the request's Host.
func SameOrigin(r *http.Request) bool { return conn.SameOrigin(r) }

// AllowOrigins returns a CheckOrigin for an allowlist of browser origins,
// the rule of /ws too (conn.AllowOrigins).
func AllowOrigins(origins []string) func(r *http.Request) bool { return conn.AllowOrigins(origins) }

// Stats are the endpoint's counters. All fields are atomic.
type Stats struct {
	Handshakes        atomic.Int64 // Engine.IO sessions opened
	Sessions          atomic.Int64 // Engine.IO sessions open now
	WebSockets        atomic.Int64 // sessions on the WebSocket transport now
	Upgrades          atomic.Int64 // polling sessions upgraded to WebSocket
	Connects          atomic.Int64 // successful Socket.IO CONNECTs
	ConnectErrors     atomic.Int64 // refused Socket.IO CONNECTs (bad token, bad namespace)
	HeartbeatTimeouts atomic.Int64 // sessions closed for not answering a ping or not connecting in time
	Pongs             atomic.Int64 // heartbeat pongs received
	BadPackets        atomic.Int64 // undecodable packets and refused events
	Refused           atomic.Int64 // HTTP requests refused (unknown sid, bad transport, origin, full)
	PendingRefused    atomic.Int64 // handshakes refused because too many sessions had not joined yet (in total or from the address)
}

// Engine.IO HTTP error codes, answered as {"code":N,"message":"..."}.
const (
	errTransportUnknown = 0
	errSessionUnknown   = 1
	errBadHandshake     = 2
	errBadRequest       = 3
	errForbidden        = 4
	errUnsupported      = 5
)

var errMessages = [...]string{"Transport unknown", "Session ID unknown", "Bad handshake method", "Bad request", "Forbidden", "Unsupported protocol version"}

// Server serves /socket.io/. Create it with New, mount it with ServeHTTP,
// and run Run for heartbeats.
type Server struct {
	o        Options
	log      *slog.Logger
	hub      *hub.Hub
	hstats   *conn.Stats // the layer's
	format   Format
	upgrader websocket.Upgrader
	stats    Stats
	warn     *ratelog.Logger // one line per key per minute
	layer    *conn.Layer
	newUpper func(*session, *http.Request) upper // the Socket.IO adapter on each Engine.IO session

	mu        sync.Mutex // guards sessions, pending, pendingBy, the sessions' pendingAddr and shutdown
	sessions  map[string]*session
	pending   int            // sessions not yet joined to "/"
	pendingBy map[string]int // pending per client address
	shutdown  bool

	wg sync.WaitGroup // WebSocket connections being served
}

// New returns a Server, or ErrOption naming a missing required option.
func New(o Options) (*Server, error) {
	switch {
	case o.Hub == nil:
		return nil, fmt.Errorf("%w: Hub is required", ErrOption)
	case o.Auth == nil:
		return nil, fmt.Errorf("%w: Auth is required", ErrOption)
	}
	o.setDefaults()
	s := &Server{o: o, log: o.Logger.With("component", "socketio"), hub: o.Hub,
		sessions: map[string]*session{}, pendingBy: map[string]int{}}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 8192,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     o.CheckOrigin,
	}
	s.warn = ratelog.New(s.log, time.Minute)
	s.newUpper = func(sess *session, r *http.Request) upper { return newSocket(s, sess, r) }
	var err error
	if s.layer, err = conn.New(conn.Options{Hub: o.Hub, Commands: o.Commands, QueueBytes: o.QueueBytes,
		OpsPerSecond: o.OpsPerSecond, OpsBurst: o.OpsBurst, Warn: s.warn}); err != nil {
		return nil, fmt.Errorf("socketio: %w", err)
	}
	s.hstats = s.layer.Stats()
	return s, nil
}

// Stats returns the endpoint's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Sessions returns the number of open Engine.IO sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ServeHTTP serves every Engine.IO request: handshakes, long-polling GETs
// and POSTs, and WebSocket connections (direct or upgrading a session).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		if !s.o.CheckOrigin(r) {
			s.refuse(w, http.StatusForbidden, errForbidden)
			return
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Content-Type")
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		s.refuse(w, http.StatusBadRequest, errUnsupported)
		return
	}
	transport, sid := q.Get("transport"), q.Get("sid")
	switch {
	case transport == "websocket":
		if !websocket.IsWebSocketUpgrade(r) {
			s.refuse(w, http.StatusBadRequest, errBadRequest)
			return
		}
		s.serveWebSocket(w, r, sid)
	case transport != "polling":
		s.refuse(w, http.StatusBadRequest, errTransportUnknown)
	case sid == "":
		if r.Method != http.MethodGet {
			s.refuse(w, http.StatusBadRequest, errBadHandshake)
			return
		}
		s.handshake(w, r)
	default:
		sess := s.session(sid)
		if sess == nil {
			s.refuse(w, http.StatusBadRequest, errSessionUnknown)
			return
		}
		switch r.Method {
		case http.MethodGet:
			sess.poll(w, r)
		case http.MethodPost:
			sess.post(w, r)
		default:
			s.refuse(w, http.StatusBadRequest, errBadRequest)
		}
	}
}

func (s *Server) refuse(w http.ResponseWriter, status, code int) {
	s.stats.Refused.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"code":%d,"message":%q}`, code, errMessages[code])
}

func (s *Server) session(sid string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[sid]
}

// open creates and registers a session, or returns nil when the server is
// full, too many sessions wait to join (from r's address or in total), or
// it is shutting down. r is the handshake request (nil in tests).
func (s *Server) open(r *http.Request) *session {
	sess := newSession(s, r)
	addr := ""
	if r != nil {
		addr = clientAddr(r)
	}
	s.mu.Lock()
	if s.shutdown || len(s.sessions) >= s.o.MaxSessions {
		s.mu.Unlock()
		return nil
	}
	if s.pending >= s.o.MaxPending || s.pendingBy[addr] >= s.o.MaxPendingPerAddr {
		s.mu.Unlock()
		s.stats.PendingRefused.Add(1)
		s.warnf("pending", "refusing Socket.IO handshakes: too many sessions have not joined yet",
			"addr", addr, "pending", s.o.MaxPending, "per_addr", s.o.MaxPendingPerAddr)
		return nil
	}
	s.pending++
	s.pendingBy[addr]++
	sess.pendingAddr = &addr
	s.sessions[sess.sid] = sess
	s.mu.Unlock()
	s.stats.Handshakes.Add(1)
	s.stats.Sessions.Add(1)
	s.hstats.Connections.Add(1)
	return sess
}

func (s *Server) remove(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess.sid)
	s.joinedLocked(sess)
	s.mu.Unlock()
	s.stats.Sessions.Add(-1)
	s.hstats.Connections.Add(-1)
}

// joined moves sess out of the pending count once it joined "/".
func (s *Server) joined(sess *session) {
	s.mu.Lock()
	s.joinedLocked(sess)
	s.mu.Unlock()
}

func (s *Server) joinedLocked(sess *session) {
	if sess.pendingAddr == nil {
		return
	}
	addr := *sess.pendingAddr
	sess.pendingAddr = nil
	s.pending--
	if s.pendingBy[addr]--; s.pendingBy[addr] <= 0 {
		delete(s.pendingBy, addr)
	}
}

// clientAddr is the host of the request's remote address.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// openPacket is the Engine.IO handshake: 0{"sid",...}.
func (s *Server) openPacket(sid string, upgrades []string) []byte {
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}{sid, upgrades, s.o.PingInterval.Milliseconds(), s.o.PingTimeout.Milliseconds(), s.o.MaxPayload})
	return append([]byte{eioOpen}, b...)
}

func (s *Server) handshake(w http.ResponseWriter, r *http.Request) {
	if !s.o.Admission.Wait(w, r) {
		return
	}
	sess := s.open(r)
	if sess == nil {
		s.stats.Refused.Add(1)
		http.Error(w, "server full or shutting down", http.StatusServiceUnavailable)
		return
	}
	writePayload(w, s.openPacket(sess.sid, []string{"websocket"}))
}

func writePayload(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// Run sends heartbeats and closes silent sessions until ctx ends, then
// closes every session.
func (s *Server) Run(ctx context.Context) error {
	tick := min(s.o.PingInterval, s.o.PingTimeout, s.o.ConnectTimeout) / 8
	tick = max(5*time.Millisecond, min(tick, time.Second))
	t := time.NewTicker(tick)
	defer t.Stop()
	var list []*session
	for {
		select {
		case <-ctx.Done():
			s.Close()
			return nil
		case now := <-t.C:
			list = s.snapshotSessions(list[:0])
			for i, sess := range list {
				sess.heartbeat(now)
				list[i] = nil
			}
		}
	}
}

func (s *Server) snapshotSessions(buf []*session) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		buf = append(buf, sess)
	}
	return buf
}

// Close refuses new sessions, closes every session (WebSocket clients get
// close code 1001, a waiting long-poll gets the Engine.IO close packet) and
// waits up to 5 s for the WebSocket writers to finish. Clients reconnect on
// their own, to another replica or to this one after a restart.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown is Close bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	for _, sess := range s.snapshotSessions(nil) {
		sess.close(reasonShutdown)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("socketio shutdown: %w", ctx.Err())
	}
}

// newSID returns an unguessable session id: knowing a sid is enough to
// read its long-polling stream, so it must not be predictable.
func newSID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *Server) warnf(key, msg string, args ...any) { s.warn.Warn(key, msg, args...) }

// readBody reads an inbound POST body up to MaxPayload.
func readBody(r *http.Request, w http.ResponseWriter, limit int) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, fmt.Errorf("read poll body: %w: over %d bytes", ErrTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read poll body: %w", err)
	}
	return b, nil
}

// ConnStats returns the Socket.IO connection layer's counters.
func (s *Server) ConnStats() *conn.Stats { return s.hstats }
