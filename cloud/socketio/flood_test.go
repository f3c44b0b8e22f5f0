package socketio

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
)

// clientFrom returns an HTTP client whose connections come from ip.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func doWith(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestHandshakeFlood: a flood of handshakes that never join the namespace
// (issue 9 item 10) fills only its own small allowance: other addresses
// still connect with a valid token, and the flood's sessions expire soon.
func TestHandshakeFlood(t *testing.T) {
	e := start(t, func(o *Options) {
		o.MaxPending, o.MaxPendingPerAddr, o.ConnectTimeout = 50, 10, 2*time.Second
	})
	attacker := clientFrom("127.0.0.1")
	refused, start := 0, time.Now()
	for range 1000 {
		status, _ := doWith(t, attacker, http.MethodGet, e.url("transport=polling"), "")
		if status == http.StatusServiceUnavailable {
			refused++
		}
		require.LessOrEqual(t, e.srv.Sessions(), 10, "one address holds at most MaxPendingPerAddr unjoined sessions")
	}
	// Flood sessions expire after ConnectTimeout, so a slow loop lets a few
	// more through: at most 10 per timeout period.
	accepted := 1000 - refused
	require.LessOrEqual(t, accepted, 10*(int(time.Since(start)/(2*time.Second))+1))

	// A dashboard from another address connects meanwhile.
	dash := clientFrom("127.0.0.2")
	status, body := doWith(t, dash, http.MethodGet, e.url("transport=polling"), "")
	require.Equal(t, http.StatusOK, status, body)
	sid := decodeJSON[handshakeView](t, []byte(body[1:])).SID
	status, _ = doWith(t, dash, http.MethodPost, e.url("transport=polling&sid="+sid), `40{"token":"`+token(t, auth.RoleViewer)+`"}`)
	require.Equal(t, http.StatusOK, status)
	_, body = doWith(t, dash, http.MethodGet, e.url("transport=polling&sid="+sid), "")
	require.True(t, strings.HasPrefix(body, "40{"), body)

	// The flood's sessions time out; the joined one stays.
	require.Eventually(t, func() bool { return e.srv.Sessions() == 1 }, 10*time.Second, 20*time.Millisecond)
	status, _ = doWith(t, attacker, http.MethodGet, e.url("transport=polling"), "")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, int64(refused), e.srv.Stats().PendingRefused.Load())
}

// TestMissingOptions: a missing required option is an error naming it.
func TestMissingOptions(t *testing.T) {
	_, err := New(Options{})
	require.ErrorIs(t, err, ErrOption)
	require.ErrorContains(t, err, "Hub is required")
}
