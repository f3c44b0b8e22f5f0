package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener is MQTT over WebSocket with an Origin check. mochi's own
// listener accepts every Origin, so any web page a user opens could reach
// a broker on the user's machine or network.
type wsListener struct {
	id        string
	addr      string
	tls       *tls.Config
	origin    func(*http.Request) bool
	readLimit int64
	refused   *atomic.Int64
	adm       admission
	log       *slog.Logger

	ln        net.Listener
	srv       *http.Server
	upgrader  websocket.Upgrader
	establish listeners.EstablishFn
}

func newWSListener(id, addr string, tc *tls.Config, origin func(*http.Request) bool, readLimit int64, refused *atomic.Int64,
	wg *sync.WaitGroup) *wsListener {
	l := &wsListener{id: id, addr: addr, tls: tc, origin: origin, readLimit: readLimit, refused: refused, adm: admission{wg: wg}}
	l.upgrader = websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true }}
	return l
}

func (l *wsListener) ID() string { return l.id }

// Address is the bound address (the real port when addr asked for 0).
func (l *wsListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *wsListener) Protocol() string {
	if l.tls != nil {
		return "wss"
	}
	return "ws"
}

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	l.srv = &http.Server{Handler: l, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.establish = establish
	if err := l.srv.Serve(l.ln); err != nil && !l.adm.isClosed() && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("websocket listener stopped", "listener", l.id, "err", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	if !l.adm.isClosed() && l.srv != nil {
		l.adm.close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.srv.Shutdown(ctx) // upgraded connections are mochi's: closeClients ends them
	}
	closeClients(l.id)
}

func (l *wsListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !l.origin(r) {
		l.refused.Add(1)
		http.Error(w, "forbidden: origin not allowed", http.StatusForbidden)
		return
	}
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	if !l.adm.enter() {
		return
	}
	defer l.adm.leave()
	c.SetReadLimit(l.readLimit)
	if err := l.establish(l.id, &wsConn{Conn: c.NetConn(), c: c}); err != nil {
		l.log.Debug("websocket client ended", "listener", l.id, "err", err)
	}
}

// originCheck returns the Origin rule of the WebSocket listener, the /ws
// rule: requests without Origin (not a browser) pass; an allowlisted origin
// ("*" = any) passes; with an empty list only a page from the listener's
// own host passes. With anonymous access on, a same-host page must also be
// on a loopback host: a DNS-rebound page has the attacker's name in both
// Host and Origin.
func originCheck(allowed []string, anonymous bool) func(*http.Request) bool {
	list := append([]string(nil), allowed...)
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		for _, a := range list {
			if a == "*" || strings.EqualFold(a, origin) {
				return true
			}
		}
		if len(list) > 0 {
			return false
		}
		u, err := url.Parse(origin)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
		return !anonymous || loopbackHost(u.Hostname())
	}
}

// loopbackHost reports whether h (no port) names the loopback interface.
func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// loopbackAddr reports whether a listen address (host:port) binds loopback only.
func loopbackAddr(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	return err == nil && loopbackHost(h)
}

// wsConn is a WebSocket connection as the byte stream mochi reads MQTT
// packets from: binary messages, any framing.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // current message, nil between messages
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errors.New("mqtt over websocket: text frame")
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
