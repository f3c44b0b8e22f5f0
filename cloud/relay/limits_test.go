package relay

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConnLimiter: past the cap a connection from the same address is
// closed at accept; closing one frees its slot.
func TestConnLimiter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := newConnLimiter(ln, 2, true, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		clients = append(clients, c)
	}
	a1, a2 := <-accepted, <-accepted
	require.Eventually(t, func() bool { return l.refused.Load() == 1 }, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 2, l.current.Load())
	_ = clients[2].SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = clients[2].Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the third connection is closed")

	require.NoError(t, a1.Close())
	_ = a1.Close() // closing twice frees one slot only
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	select {
	case a3 := <-accepted:
		a3.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot was not reused")
	}
	a2.Close()
	require.Eventually(t, func() bool { return l.current.Load() == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestRobotInPath(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/robots/r-1/metrics": "r-1", "/api/v1/robots/r-2": "r-2", "/api/v1/robots/a%2Fb/metrics": "a/b",
		"/api/v1/robots": "", "/api/v1/robots/": "", "/api/v1/stats": "",
	} {
		got, ok := robotInPath(path)
		require.Equal(t, want, got, path)
		require.Equal(t, want != "", ok, path)
	}
}

// TestConnLimiterLoopbackExempt: without limitLoopback, loopback clients
// (a reverse proxy on the same host) are not capped, only counted.
func TestConnLimiterLoopbackExempt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l := newConnLimiter(ln, 1, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer l.Close()
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		a, err := l.Accept()
		require.NoError(t, err)
		defer a.Close()
	}
	require.EqualValues(t, 0, l.refused.Load())
	require.EqualValues(t, 3, l.current.Load())
}
