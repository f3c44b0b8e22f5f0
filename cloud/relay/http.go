package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/config"
)

// httpEdge is what stands between the network and the relay's routes: the
// per-address connection cap, idle and body deadlines, the DNS-rebinding
// guard with auth off, token checks for /api/v1/* and /metrics, and the
// optional separate /metrics listener.
type httpEdge struct {
	cfg      config.Config
	authn    *auth.Authenticator
	log      *slog.Logger
	conns    *connLimiter
	metrics  *http.Server // nil unless prometheus.listen is set
	metricLn net.Listener
}

// serverTimeouts are the main server's: header and idle deadlines here, the
// body deadline per request (bodyDeadline) so that upgraded WebSockets and
// long-polls, which read no body, are not cut.
func serverTimeouts(srv *http.Server, c config.HTTP) {
	srv.ReadHeaderTimeout = 10 * time.Second
	srv.IdleTimeout = c.IdleTimeout
}

// listen binds the main listener behind the per-address connection cap and
// the optional /metrics listener.
func (e *httpEdge) listen(metrics http.Handler) (net.Listener, error) {
	ln, err := net.Listen("tcp", e.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrListen, e.cfg.Listen, err)
	}
	e.conns = newConnLimiter(ln, e.cfg.HTTP.MaxConnsPerAddr, e.cfg.HTTP.LimitLoopback, e.log)
	if a := e.cfg.Prometheus.Listen; a != "" {
		if e.metricLn, err = net.Listen("tcp", a); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%w: prometheus.listen %s: %v", ErrListen, a, err)
		}
		if !config.Loopback(a) {
			e.log.Warn("prometheus.listen is not a loopback address: /metrics there has no token", "listen", a)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		if e.cfg.Prometheus.Pprof {
			mux.HandleFunc("GET /debug/pprof/", pprof.Index)
			mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
			e.log.Info("serving Go profiles", "url", "http://"+e.metricLn.Addr().String()+"/debug/pprof/")
		}
		e.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: e.cfg.HTTP.IdleTimeout,
			ReadTimeout: e.cfg.HTTP.BodyTimeout, ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelWarn)}
	}
	return e.conns, nil
}

// MetricsAddr is the separate /metrics listener's address, "" without one.
func (e *httpEdge) MetricsAddr() string {
	if e.metricLn == nil {
		return ""
	}
	return e.metricLn.Addr().String()
}

// serveMetrics serves the separate /metrics listener, if any, until
// shutdownMetrics.
func (e *httpEdge) serveMetrics(errc chan<- error) {
	if e.metrics == nil {
		return
	}
	go func() {
		if err := e.metrics.Serve(e.metricLn); !errors.Is(err, http.ErrServerClosed) {
			select {
			case errc <- fmt.Errorf("serve metrics: %w", err):
			default:
			}
		}
	}()
}

func (e *httpEdge) shutdownMetrics(ctx context.Context) {
	if e.metrics != nil {
		if err := e.metrics.Shutdown(ctx); err != nil {
			_ = e.metrics.Close()
		}
	}
}

// handler wraps the routes with the checks every request passes.
func (e *httpEdge) handler(routes http.Handler) http.Handler {
	h := bodyDeadline(e.cfg.HTTP.BodyTimeout, routes)
	if !e.authn.Enabled() {
		h = hostGuard(e.cfg, h)
	}
	return h
}

// metricsHandler is /metrics on the main listener: absent when a separate
// listener serves it, behind an admin token for every robot when auth is on.
func (e *httpEdge) metricsHandler(h http.Handler) http.Handler {
	if e.cfg.Prometheus.Listen != "" {
		return http.NotFoundHandler()
	}
	if !e.authn.Enabled() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := e.authn.Authenticate(auth.FromRequest(r))
		if err != nil {
			unauthorized(w, err)
			return
		}
		if p.Role != auth.RoleAdmin || !p.AllRobots() {
			http.Error(w, "forbidden: /metrics needs an admin token for every robot", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// promHandler serves the relay's registry.
func (r *Relay) promHandler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// apiAuth authenticates every /api/v1/* request like /ws (Bearer header or
// ?token=), refuses a robot outside the token's robots claim for paths
// under /api/v1/robots/{id}/, and hands the principal to the handlers
// (auth.FromContext) so lists can be filtered. Every route on the API mux,
// present and future, is behind it. With auth off the principal is
// Anonymous (admin, every robot).
func apiAuth(a *auth.Authenticator, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(auth.FromRequest(r))
		if err != nil {
			unauthorized(w, err)
			return
		}
		if id, ok := robotInPath(r.URL.EscapedPath()); ok && !p.CanRobot(id) {
			http.Error(w, "forbidden: robot not in the token's robots claim", http.StatusForbidden)
			return
		}
		api.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), p)))
	})
}

// robotInPath returns {id} of /api/v1/robots/{id}[/...], unescaped.
func robotInPath(escaped string) (string, bool) {
	rest, ok := strings.CutPrefix(escaped, "/api/v1/robots/")
	if !ok {
		return "", false
	}
	seg, _, _ := strings.Cut(rest, "/")
	id, err := url.PathUnescape(seg)
	if err != nil || id == "" {
		return seg, seg != ""
	}
	return id, true
}

func unauthorized(w http.ResponseWriter, err error) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="fleet-relay"`)
	http.Error(w, "unauthorized: "+err.Error(), http.StatusUnauthorized)
}

// principal is the request's principal (apiAuth put it there).
func principal(r *http.Request) *auth.Principal {
	if p, ok := auth.FromContext(r.Context()); ok {
		return p
	}
	return &auth.Principal{} // no robots: sees nothing
}

// bodyDeadline bounds reading a request's body, so a client trickling a
// body cannot hold a connection. Requests without a body (WebSocket
// upgrades, Socket.IO long-poll GETs) keep no deadline.
func bodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}

// hostGuard defends a relay with auth off against DNS rebinding: a page on
// an attacker's domain re-bound to 127.0.0.1 sends the attacker's name as
// Host and its own Origin, so only loopback names and addresses are
// accepted in both. With insecure_no_auth on a non-loopback address, IP
// literals and the hosts of allowed_origins are accepted too (names an
// attacker cannot re-bind). allowed_origins ("*" excepted) are accepted as
// Origins.
func hostGuard(cfg config.Config, next http.Handler) http.Handler {
	remote := cfg.InsecureNoAuth && !config.Loopback(cfg.Listen)
	origins := map[string]bool{}
	hosts := map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			continue
		}
		origins[strings.ToLower(o)] = true
		if u, err := url.Parse(o); err == nil && u.Hostname() != "" {
			hosts[strings.ToLower(u.Hostname())] = true
		}
	}
	hostOK := func(hostport string) bool {
		h := hostname(hostport)
		switch {
		case loopbackName(h):
			return true
		case remote && (net.ParseIP(h) != nil || hosts[h]):
			return true
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostOK(r.Host) {
			http.Error(w, fmt.Sprintf("forbidden: Host %q: with auth off only loopback hosts are served (DNS rebinding guard)", r.Host),
				http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !origins[strings.ToLower(o)] {
			u, err := url.Parse(o)
			if err != nil || u.Host == "" || !hostOK(u.Host) {
				http.Error(w, fmt.Sprintf("forbidden: Origin %q: with auth off only loopback origins are served", o),
					http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// hostname is host:port's host, lower case, without brackets.
func hostname(hostport string) string {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
}

// loopbackName reports whether h is localhost, a *.localhost name (RFC 6761
// keeps them on loopback) or a loopback address.
func loopbackName(h string) bool {
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// handleRobots is /api/v1/robots: the robots the token's claim covers.
func (r *Relay) handleRobots(w http.ResponseWriter, req *http.Request) {
	p := principal(req)
	all := r.hub.Robots()
	robots := all[:0:0]
	for _, rb := range all {
		if p.CanRobot(rb.ID) {
			robots = append(robots, rb)
		}
	}
	writeJSON(w, map[string]any{"robots": robots})
}

// MetricsAddr is the address of the separate /metrics listener
// (prometheus.listen), "" without one.
func (r *Relay) MetricsAddr() string { return r.edge.MetricsAddr() }
