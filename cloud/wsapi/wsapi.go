// Package wsapi is the relay's JSON WebSocket API at GET /ws (spec §5):
// authentication before the upgrade, one reader and one writer goroutine per
// connection, the subscribe/unsubscribe/ping/command ops, heartbeats, read
// and rate limits, and slow-consumer handling on top of hub.Queue.
package wsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/internal/ratelog"
)

// Close codes the relay uses beyond RFC 6455's.
const (
	CloseSlowConsumer     = 4008 // the client's queue passed its byte cap
	CloseTokenExpired     = 4001 // the token's exp passed mid-connection
	CloseHeartbeatTimeout = 4000 // nothing heard for Heartbeat + ClientGrace
)

// Options configures a Handler. Zero fields take the defaults named here.
type Options struct {
	// Hub routes events. Required.
	Hub *hub.Hub
	// Auth checks tokens. Required (auth.New with no keys means auth off).
	Auth *auth.Authenticator
	// Commands carries command ops; nil answers them with code internal.
	Commands *command.Tracker
	// AllowedOrigins lists browser origins allowed to connect, e.g.
	// "https://dash.example.com"; "*" allows any. Requests without an
	// Origin header (non-browsers) are always allowed. Default: only the
	// relay's own host.
	AllowedOrigins []string
	// Admission paces new connections, after their token and Origin are
	// checked (a flood of bad tokens takes no one's place). Nil: no pacing.
	Admission *conn.Admission
	// Heartbeat is the server ping period, sent to clients as heartbeat_s.
	// Default 25s.
	Heartbeat time.Duration
	// ClientGrace: a client silent for Heartbeat + ClientGrace is closed.
	// Default 20s.
	ClientGrace time.Duration
	// WriteTimeout is the deadline of every write. Default 10s.
	WriteTimeout time.Duration
	// QueueBytes caps one client's queue. Default 1 MiB (conn.Options).
	QueueBytes int
	// ReadLimit is the largest client frame; larger closes with 1009.
	// Default 64 KiB.
	ReadLimit int64
	// OpsPerSecond is the sustained op rate per client; more get
	// rate_limited. Default 20.
	OpsPerSecond float64
	// OpsBurst is the op burst per client. Default 2 × OpsPerSecond.
	OpsBurst float64
	// BatchBytes is how much the writer takes from the queue per wake-up.
	// Default 64 KiB.
	BatchBytes int
	// Observe receives the fan-out latency (event ts to write) of each
	// event frame, in seconds. Default: none.
	Observe func(seconds float64)
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Heartbeat <= 0 {
		o.Heartbeat = 25 * time.Second
	}
	if o.ClientGrace <= 0 {
		o.ClientGrace = 20 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 64 << 10
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 64 << 10
	}
	if o.Observe == nil {
		o.Observe = func(float64) {}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Handler serves /ws.
type Handler struct {
	o        Options
	log      *slog.Logger
	upgrader websocket.Upgrader
	stats    *conn.Stats // the layer's

	mu       sync.Mutex // guards clients and shutdown
	clients  map[*client]struct{}
	shutdown bool

	warn   *ratelog.Logger // one line per message per 10 s: a thousand slow clients make one
	layer  *conn.Layer
	origin func(*http.Request) bool // conn.AllowOrigins(AllowedOrigins)
}

// New returns a Handler, or an error naming a missing required option.
func New(o Options) (*Handler, error) {
	switch {
	case o.Hub == nil:
		return nil, fmt.Errorf("%w: Hub is required", ErrOption)
	case o.Auth == nil:
		return nil, fmt.Errorf("%w: Auth is required", ErrOption)
	}
	o.setDefaults()
	h := &Handler{o: o, log: o.Logger, clients: map[*client]struct{}{},
		warn: ratelog.New(o.Logger, 10*time.Second)}
	h.origin = conn.AllowOrigins(o.AllowedOrigins)
	var err error
	if h.layer, err = conn.New(conn.Options{Hub: o.Hub, Commands: o.Commands, QueueBytes: o.QueueBytes,
		OpsPerSecond: o.OpsPerSecond, OpsBurst: o.OpsBurst, Warn: h.warn}); err != nil {
		return nil, fmt.Errorf("wsapi: %w", err)
	}
	h.stats = h.layer.Stats()
	h.upgrader = websocket.Upgrader{
		// Small read buffers and pooled write buffers keep idle
		// connections cheap; frames larger than the buffers still work.
		ReadBufferSize:  512,
		WriteBufferSize: 8192,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     h.checkOrigin,
	}
	return h, nil
}

func (h *Handler) checkOrigin(r *http.Request) bool { return h.origin(r) }

// ServeHTTP authenticates, upgrades and serves one connection.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, err := h.o.Auth.Authenticate(auth.FromRequest(r))
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fleet-relay"`)
		http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if !h.checkOrigin(r) {
		http.Error(w, "forbidden: origin not allowed", http.StatusForbidden)
		return
	}
	h.mu.Lock()
	down := h.shutdown
	h.mu.Unlock()
	if down {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if !h.o.Admission.Wait(w, r) {
		return
	}
	conn, err := h.upgrader.Upgrade(batchingWriter{w}, r, nil)
	if err != nil {
		return // Upgrade answered the client already
	}
	h.mu.Lock()
	if h.shutdown {
		h.mu.Unlock()
		msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		_ = conn.Close()
		return
	}
	c := newClient(h, conn, p)
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	h.stats.Connections.Add(1)
	c.sendConnected()
	// Read on a fresh goroutine and return: the hijacked connection no
	// longer needs net/http's goroutine, whose deep stack would otherwise
	// stay with every idle client.
	go func() {
		c.runReader()
		<-c.done
		h.mu.Lock()
		delete(h.clients, c)
		h.mu.Unlock()
		h.stats.Connections.Add(-1)
	}()
}

// Shutdown closes every client with 1001 (going away) and waits until they
// are gone or ctx ends.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.shutdown = true
	cs := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	for _, c := range cs {
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Clients returns the number of open connections.
func (h *Handler) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ConnStats returns the /ws connection layer's counters.
func (h *Handler) ConnStats() *conn.Stats { return h.stats }
