package relay

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
)

// connLimiter is a listener that caps the open connections of one client
// IP address: past the cap a new connection is closed at once, before any
// byte is read, and counted. Hijacked connections (WebSockets) count until
// they close. Loopback clients are exempt unless limitLoopback: on the
// relay's own host they are a reverse proxy (every user behind one
// address), local tools and benchmarks.
type connLimiter struct {
	net.Listener
	max           int
	limitLoopback bool
	log           *slog.Logger

	mu   sync.Mutex     // guards open
	open map[string]int // client IP → open connections

	refused atomic.Int64
	current atomic.Int64
}

func newConnLimiter(ln net.Listener, max int, limitLoopback bool, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, max: max, limitLoopback: limitLoopback, log: log, open: map[string]int{}}
}

// Accept returns the next connection within the cap.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if !l.limitLoopback {
			if a := net.ParseIP(ip); a != nil && a.IsLoopback() {
				l.current.Add(1)
				return &limitedConn{Conn: c, release: func() { l.current.Add(-1) }}, nil
			}
		}
		l.mu.Lock()
		if l.open[ip] >= l.max {
			l.mu.Unlock()
			c.Close()
			if n := l.refused.Add(1); n == 1 || n%1000 == 0 {
				l.log.Warn("connection refused: too many from one address", "addr", ip, "max_conns_per_addr", l.max,
					"refused_total", n)
			}
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		l.current.Add(1)
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *connLimiter) release(ip string) {
	l.current.Add(-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	h, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return h
}

// limitedConn gives its slot back when closed (once).
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
