package relay_test

import (
	"net/http"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A reconnect storm waits in line: past a burst, new connections are let in
// at ws.accept_rate_per_core; one that would wait longer than ws.accept_wait
// gets 503 with Retry-After, on /ws and Socket.IO alike (one line for both),
// and the connected clients are not disturbed. Without admission every dial
// here connects at once.
func TestReconnectStormWaitsInLine(t *testing.T) {
	cfg := testConfig()
	cfg.WS.AcceptRatePerCore = 2 / float64(runtime.GOMAXPROCS(0)) // 2 per second in all, a burst of 1
	cfg.WS.AcceptWait = 700 * time.Millisecond
	r := startRelay(t, cfg)
	delayed := func() float64 { return metricValue(t, r.Addr(), "fleet_relay_admission_delayed_total") }

	first := connect(t, r, "") // the burst
	start := time.Now()
	second := connect(t, r, "")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "the second connection waited its turn (0.5 s at 2/s)")
	require.Equal(t, 1.0, delayed())

	// One more takes the next place in line (0.5 s); the one after would
	// wait about 1 s, longer than accept_wait.
	inLine := make(chan error, 1)
	go func() {
		c, _, err := dial(t, r, "", nil)
		if err == nil {
			c.Close()
		}
		inLine <- err
	}()
	require.Eventually(t, func() bool { return delayed() == 2 }, wait, 5*time.Millisecond)
	_, resp, err := dial(t, r, "", nil)
	require.Error(t, err, "a connection past the wait bound is refused")
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After is a number of seconds")
	require.GreaterOrEqual(t, retry, 1)
	code, body := httpGet(t, "http://"+r.Addr()+"/socket.io/?EIO=4&transport=polling")
	require.Equal(t, http.StatusServiceUnavailable, code, "a new Socket.IO session waits in the same line: %s", body)
	require.NoError(t, <-inLine, "the connection in line got in")
	require.Equal(t, 2.0, metricValue(t, r.Addr(), "fleet_relay_admission_refused_total"))

	for _, c := range []*wsClient{first, second} {
		c.send(map[string]any{"op": "ping", "ref": 1})
		require.Equal(t, "pong", c.next().Type)
	}
}
