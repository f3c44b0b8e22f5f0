// Package tcpproxy is a TCP proxy that tests put between a client and a
// server (an agent or the relay and its MQTT broker) to inject network faults
// as an operator would meet them:
//
//   - Cut drops every open connection (reset) and refuses new ones: they are
//     accepted and closed at once, so a client sees its connect fail fast.
//   - Blackhole is a silent network: connections stay open and new ones are
//     accepted, but no byte and no close passes in either direction.
//   - Restore forwards again. What a blackhole held then proceeds as a real
//     network lets it: bytes read during the blackhole are delivered, a close
//     seen during it is passed on, and a connection accepted during it is
//     dialled to the target only now (like a SYN retransmitted after the cut).
//
// The proxy listens on 127.0.0.1 on a free port for its whole life, so the
// address a client was given stays valid across faults. Each direction of a
// connection holds at most one 32 KiB read buffer; beyond it TCP flow control
// pushes back on the sender, as a stalled path would.
package tcpproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int

const (
	// Forward passes bytes both ways.
	Forward Mode = iota
	// Cut has dropped every connection and refuses new ones.
	Cut
	// Blackhole holds everything: no byte and no close passes.
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Cut:
		return "cut"
	case Blackhole:
		return "blackhole"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

const (
	// dialTimeout bounds the dial to the target; a target that does not
	// answer in time closes the client's connection.
	dialTimeout = 5 * time.Second
	// bufSize is the bytes one direction of a link may hold.
	bufSize = 32 << 10
)

// Stats counts connections since New.
type Stats struct {
	Accepted int64 // client connections accepted (refused ones included)
	Refused  int64 // accepted and closed at once because the proxy was cut
	Dropped  int64 // open connections closed by Cut
	Active   int64 // connections open now (held ones included)
	DialFail int64 // connections closed because the target refused or timed out
}

// Proxy forwards connections from Addr to a target. Its methods are safe for
// concurrent use.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	// mu guards mode, changed, links and closed.
	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed and replaced at every mode change
	links   map[*link]struct{}
	closed  bool

	accepted, refused, dropped, active, dialFail atomic.Int64
}

// New starts a proxy to target (host:port) on 127.0.0.1 on a free port, in
// Forward mode.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpproxy: listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		links:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the host:port the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Cut resets every open connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	links := p.links
	p.links = make(map[*link]struct{})
	p.setModeLocked(Cut)
	p.mu.Unlock()
	for l := range links {
		p.dropped.Add(1)
		l.close(true)
	}
}

// Blackhole stops all traffic without closing anything until Restore.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.setModeLocked(Blackhole)
	p.mu.Unlock()
}

// Restore forwards again; connections held by a blackhole resume.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.setModeLocked(Forward)
	p.mu.Unlock()
}

// Stats returns the connection counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted: p.accepted.Load(),
		Refused:  p.refused.Load(),
		Dropped:  p.dropped.Load(),
		Active:   p.active.Load(),
		DialFail: p.dialFail.Load(),
	}
}

// Close stops listening, closes every connection and waits for the proxy's
// goroutines. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.links
	p.links = nil
	close(p.changed)
	p.mu.Unlock()
	err := p.ln.Close()
	for l := range links {
		l.close(true)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) setModeLocked(m Mode) {
	if p.closed {
		return
	}
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
}

// waitForward blocks until the proxy forwards (true) or the link must end
// because the proxy was cut, closed, or the link was closed (false).
func (p *Proxy) waitForward(l *link) bool {
	for {
		p.mu.Lock()
		m, ch, closed := p.mode, p.changed, p.closed
		p.mu.Unlock()
		switch {
		case closed || m == Cut:
			return false
		case m == Forward:
			return true
		}
		select {
		case <-ch:
		case <-l.done:
			return false
		}
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary errors (EMFILE): back off briefly, keep serving.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.mode == Cut {
			p.mu.Unlock()
			p.refused.Add(1)
			l.close(true)
			continue
		}
		p.links[l] = struct{}{}
		p.active.Add(1)
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve dials the target once the proxy forwards, then pumps both ways.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
		p.active.Add(-1)
	}()
	if !p.waitForward(l) {
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	srv, err := d.Dial("tcp", p.target)
	if err != nil {
		p.dialFail.Add(1)
		return
	}
	if !l.setServer(srv) {
		srv.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(l, srv, l.client) }()
	go func() { defer wg.Done(); p.pump(l, l.client, srv) }()
	wg.Wait()
}

// pump copies src to dst, holding each chunk (and the final close) while the
// proxy is blackholed. When src ends, dst's write side is closed so the peer
// sees the EOF; when both directions ended the link closes.
func (p *Proxy) pump(l *link, dst, src net.Conn) {
	buf := make([]byte, bufSize)
	for {
		n, rerr := src.Read(buf)
		if !p.waitForward(l) {
			l.close(true)
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.close(true)
				return
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				l.close(true)
				return
			}
			if !l.halfClose(dst) {
				l.close(false)
			}
			return
		}
	}
}

// link is one client connection and, once dialled, its server connection.
type link struct {
	client net.Conn
	done   chan struct{} // closed by close

	// mu guards server, closed and halves.
	mu     sync.Mutex
	server net.Conn
	closed bool
	halves int // directions that ended with EOF
}

// setServer attaches the dialled server connection; false if the link was
// closed meanwhile.
func (l *link) setServer(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.server = c
	return true
}

// halfClose passes an EOF on by closing dst's write side. It returns false
// when both directions have ended (or dst cannot half-close) and the link
// should close.
func (l *link) halfClose(dst net.Conn) bool {
	l.mu.Lock()
	l.halves++
	both := l.halves == 2
	l.mu.Unlock()
	if both {
		return false
	}
	tc, ok := dst.(*net.TCPConn)
	if !ok {
		return false
	}
	return tc.CloseWrite() == nil
}

// close closes both connections once; reset sends an RST instead of a FIN,
// as a dropped path or a refused connection does.
func (l *link) close(reset bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	srv := l.server
	l.mu.Unlock()
	close(l.done)
	for _, c := range []net.Conn{l.client, srv} {
		if c == nil {
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok && reset {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}
