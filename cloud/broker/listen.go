package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// admission hands connections to mochi without racing its shutdown. mochi
// counts clients in Listeners.ClientsWg (Add when a client attaches, Wait in
// Server.Close); a connection accepted while Close runs would Add to a zero
// counter concurrently with the Wait, which sync.WaitGroup forbids (and the
// race detector reports). The listener adds first, under mu, before it may
// be closed, so mochi's own Add always finds the counter above zero.
type admission struct {
	wg     *sync.WaitGroup // mochi's Listeners.ClientsWg
	mu     sync.Mutex
	closed bool // guarded by mu
}

// enter reserves a client slot, or returns false once closed.
func (a *admission) enter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	a.wg.Add(1)
	return true
}

func (a *admission) leave() { a.wg.Done() }

func (a *admission) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
}

func (a *admission) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// tcpListener is MQTT over TCP or TLS. Unlike mochi's, it keeps accepting
// after a temporary Accept error (e.g. out of file descriptors) and admits
// connections through admission.
type tcpListener struct {
	id, addr string
	tls      *tls.Config
	adm      admission
	ln       net.Listener
	log      *slog.Logger
}

func newTCPListener(id, addr string, tc *tls.Config, wg *sync.WaitGroup) *tcpListener {
	return &tcpListener{id: id, addr: addr, tls: tc, adm: admission{wg: wg}}
}

func (l *tcpListener) ID() string { return l.id }

// Address is the bound address (the real port when addr asked for 0).
func (l *tcpListener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

func (l *tcpListener) Protocol() string {
	if l.tls != nil {
		return "tls"
	}
	return "tcp"
}

func (l *tcpListener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tls != nil {
		ln = tls.NewListener(ln, l.tls)
	}
	l.ln = ln
	return nil
}

func (l *tcpListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.adm.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("mqtt listener: accept failed; retrying", "listener", l.id, "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !l.adm.enter() {
			conn.Close()
			return
		}
		go func() {
			defer l.adm.leave()
			if err := establish(l.id, conn); err != nil {
				l.log.Debug("mqtt client ended", "listener", l.id, "err", err)
			}
		}()
	}
}

func (l *tcpListener) Close(closeClients listeners.CloseFn) {
	l.adm.close()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	closeClients(l.id)
}
