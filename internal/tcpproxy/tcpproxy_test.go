package tcpproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echoServer is a real TCP server that echoes lines and counts connections.
type echoServer struct {
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &echoServer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	t.Cleanup(func() { s.closeAll(); ln.Close() })
	return s
}

func (s *echoServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := c.Write([]byte(msg + "\n"))
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, msg+"\n", line)
}

// assertSilent checks that nothing arrives on c for a short while. A late
// byte can only make this pass wrongly, never fail wrongly.
func assertSilent(t *testing.T, c net.Conn, r *bufio.Reader) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(300*time.Millisecond)))
	_, err := r.ReadByte()
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "expected silence, got %v", err)
}

func TestForward(t *testing.T) {
	s := startEcho(t)
	p := newProxy(t, s.ln.Addr().String())
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "hello")
	require.Equal(t, Forward, p.Mode())
	st := p.Stats()
	require.EqualValues(t, 1, st.Accepted)
	require.EqualValues(t, 1, st.Active)
}

func TestCutDropsAndRefusesThenRestore(t *testing.T) {
	s := startEcho(t)
	p := newProxy(t, s.ln.Addr().String())
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "before")

	p.Cut()
	// The open connection is reset.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := r.ReadByte()
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "connection not dropped: %v", err)

	// A new connection is accepted and reset at once (the reset may reach
	// the dial itself).
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		require.NoError(t, c2.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, err = c2.Read(make([]byte, 1))
		c2.Close()
		require.Error(t, err)
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "new connection not refused: %v", err)
	}
	require.Eventually(t, func() bool { return p.Stats().Refused == 1 }, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, s.accepted.Load(), "a refused connection must not reach the target")

	require.EqualValues(t, 1, p.Stats().Dropped)
	require.Eventually(t, func() bool { return p.Stats().Active == 0 }, 10*time.Second, 10*time.Millisecond)

	p.Restore()
	c3, r3 := dial(t, p.Addr())
	roundTrip(t, c3, r3, "after")
}

func TestBlackholeHoldsThenRestoreDelivers(t *testing.T) {
	s := startEcho(t)
	p := newProxy(t, s.ln.Addr().String())
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "before")

	p.Blackhole()
	_, err := c.Write([]byte("held\n"))
	require.NoError(t, err)
	assertSilent(t, c, r)

	// A connection made during the blackhole is accepted but not dialled.
	c2, r2 := dial(t, p.Addr())
	_, err = c2.Write([]byte("late\n"))
	require.NoError(t, err)
	assertSilent(t, c2, r2)
	require.EqualValues(t, 1, s.accepted.Load(), "blackholed connection reached the target")
	require.EqualValues(t, 2, p.Stats().Active)

	p.Restore()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "held\n", line)
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(10*time.Second)))
	line, err = r2.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "late\n", line)
	require.EqualValues(t, 2, s.accepted.Load())
}

func TestBlackholeHidesServerCloseUntilRestore(t *testing.T) {
	s := startEcho(t)
	p := newProxy(t, s.ln.Addr().String())
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "x")

	p.Blackhole()
	s.closeAll()
	assertSilent(t, c, r)

	p.Restore()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err := r.ReadByte()
	require.ErrorIs(t, err, io.EOF)
	// The client's own close ends the half-closed link.
	c.Close()
	require.Eventually(t, func() bool { return p.Stats().Active == 0 }, 10*time.Second, 10*time.Millisecond)
}

func TestCutDuringBlackhole(t *testing.T) {
	s := startEcho(t)
	p := newProxy(t, s.ln.Addr().String())
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "x")
	p.Blackhole()
	_, err := c.Write([]byte("lost\n"))
	require.NoError(t, err)
	p.Cut()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = r.ReadByte()
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded))
	p.Restore()
	c2, r2 := dial(t, p.Addr())
	roundTrip(t, c2, r2, "y")
}

func TestTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	p := newProxy(t, addr)
	c, r := dial(t, p.Addr())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = r.ReadByte()
	require.Error(t, err)
	require.False(t, errors.Is(err, os.ErrDeadlineExceeded))
	require.Eventually(t, func() bool { return p.Stats().DialFail == 1 }, 10*time.Second, 10*time.Millisecond)
}

func TestCloseEndsEverything(t *testing.T) {
	s := startEcho(t)
	p, err := New(s.ln.Addr().String())
	require.NoError(t, err)
	c, r := dial(t, p.Addr())
	roundTrip(t, c, r, "x")
	p.Blackhole()
	c2, _ := dial(t, p.Addr())
	_, err = c2.Write([]byte("held\n"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return p.Stats().Active == 2 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close())
	require.EqualValues(t, 0, p.Stats().Active)
	_, err = net.DialTimeout("tcp", p.Addr(), time.Second)
	require.Error(t, err)
}
