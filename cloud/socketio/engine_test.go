package socketio

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

// These tests speak raw Engine.IO / Socket.IO to check what the stock
// client does not exercise: errors, limits, heartbeat, overlap, upgrade.

type handshakeView struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
	MaxPayload   int      `json:"maxPayload"`
}

// poller is a raw long-polling client.
type poller struct {
	t       *testing.T
	base    string
	sid     string
	pending []string // packets read but not yet matched by until
}

func (e *env) url(query string) string { return e.ts.URL + "/socket.io/?EIO=4&" + query }

var httpClient = &http.Client{Timeout: 15 * time.Second}

func do(t *testing.T, method, url, body string, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

// handshake opens a polling session.
func (e *env) handshake(t *testing.T) (*poller, handshakeView) {
	t.Helper()
	status, body, hdr := do(t, http.MethodGet, e.url("transport=polling"), "", nil)
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, "text/plain; charset=UTF-8", hdr.Get("Content-Type"))
	require.True(t, strings.HasPrefix(body, "0"), body)
	hv := decodeJSON[handshakeView](t, []byte(body[1:]))
	require.NotEmpty(t, hv.SID)
	return &poller{t: t, base: e.url("transport=polling&sid=" + hv.SID), sid: hv.SID}, hv
}

func (p *poller) get() (int, string) {
	p.t.Helper()
	status, body, _ := do(p.t, http.MethodGet, p.base, "", nil)
	return status, body
}

// packets GETs once and splits the payload.
func (p *poller) packets() []string {
	p.t.Helper()
	status, body := p.get()
	require.Equal(p.t, http.StatusOK, status, body)
	return strings.Split(body, "\x1e")
}

func (p *poller) post(body string) int {
	p.t.Helper()
	status, _, _ := do(p.t, http.MethodPost, p.base, body, nil)
	return status
}

// until GETs until a packet satisfies match (skipping pings after
// answering them) and returns it.
func (p *poller) until(what string, match func(string) bool) string {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if len(p.pending) == 0 {
			p.pending = p.packets()
		}
		for len(p.pending) > 0 {
			pkt := p.pending[0]
			p.pending = p.pending[1:]
			if match(pkt) {
				return pkt
			}
			if pkt == "2" {
				// 400: the server may have closed the session meanwhile (a test
				// waiting for that close sees it in the packets that follow).
				require.Contains(p.t, []int{http.StatusOK, http.StatusBadRequest}, p.post("3"))
			}
		}
	}
	p.t.Fatalf("no %s within 10s", what)
	return ""
}

// connect joins namespace / with tok over polling.
func (p *poller) connect(tok string) {
	p.t.Helper()
	require.Equal(p.t, http.StatusOK, p.post(`40{"token":"`+tok+`"}`))
	p.until("connect", func(s string) bool { return strings.HasPrefix(s, "40{") })
	p.until("connected event", func(s string) bool { return strings.HasPrefix(s, `42["connected"`) })
}

func TestHandshake(t *testing.T) {
	e := start(t, nil)
	_, hv := e.handshake(t)
	assert.Equal(t, []string{"websocket"}, hv.Upgrades)
	assert.Equal(t, 300, hv.PingInterval)
	assert.Equal(t, 2000, hv.PingTimeout)
	assert.Equal(t, 64<<10, hv.MaxPayload)
	assert.GreaterOrEqual(t, len(hv.SID), 20)
	assert.Equal(t, 1, e.srv.Sessions())
}

func TestBadRequests(t *testing.T) {
	e := start(t, nil)
	tests := []struct {
		name   string
		method string
		url    string
		status int
		code   int
	}{
		{"engine.io v3", http.MethodGet, e.ts.URL + "/socket.io/?EIO=3&transport=polling", 400, errUnsupported},
		{"no EIO", http.MethodGet, e.ts.URL + "/socket.io/?transport=polling", 400, errUnsupported},
		{"unknown transport", http.MethodGet, e.url("transport=flash"), 400, errTransportUnknown},
		{"unknown sid", http.MethodGet, e.url("transport=polling&sid=nope"), 400, errSessionUnknown},
		{"handshake by POST", http.MethodPost, e.url("transport=polling"), 400, errBadHandshake},
		{"websocket without upgrade", http.MethodGet, e.url("transport=websocket"), 400, errBadRequest},
		{"websocket unknown sid", http.MethodGet, e.url("transport=websocket&sid=nope"), 400, errBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := do(t, tc.method, tc.url, "", nil)
			require.Equal(t, tc.status, status, body)
			got := decodeJSON[struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}](t, []byte(body))
			assert.Equal(t, tc.code, got.Code)
			assert.Equal(t, errMessages[tc.code], got.Message)
		})
	}
}

func TestPollingEventsAndAcks(t *testing.T) {
	e := start(t, nil)
	p, _ := e.handshake(t)
	p.connect(token(t, auth.RoleViewer))
	// Two packets in one POST: a ping with ack and an event without.
	require.Equal(t, http.StatusOK, p.post(`421["ping",{"timestamp":"t1"}]`+"\x1e"+`42["subscribe_fleet"]`))
	ack := p.until("ack", func(s string) bool { return strings.HasPrefix(s, "431[") })
	assert.JSONEq(t, `"t1"`, string(decodeJSON[[]struct {
		Timestamp json.RawMessage `json:"timestamp"`
	}](t, []byte(ack[3:]))[0].Timestamp))
	p.until("subscribed", func(s string) bool { return strings.HasPrefix(s, `42["subscribed",{"room":"fleet"`) })
	ingest(t, e.hub, protocol.TypeRobotStatus, "r-9", "", 1, nil)
	pkt := p.until("robot_status", func(s string) bool { return strings.HasPrefix(s, `42["robot_status",`) })
	var args []json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(pkt[2:]), &args))
	ev, err := protocol.Decode(args[1])
	require.NoError(t, err)
	assert.Equal(t, "r-9", ev.Robot)
}

func TestEventsBeforeConnectAreIgnored(t *testing.T) {
	e := start(t, nil)
	p, _ := e.handshake(t)
	require.Equal(t, http.StatusOK, p.post(`42["subscribe_fleet"]`))
	p.connect(token(t, auth.RoleViewer))
	assert.Zero(t, e.hub.Counts().Subscriptions)
	assert.Equal(t, int64(1), e.srv.Stats().BadPackets.Load())
}

func TestHeartbeat(t *testing.T) {
	t.Run("answered pings keep the session", func(t *testing.T) {
		e := start(t, func(o *Options) { o.PingInterval, o.PingTimeout = 50*time.Millisecond, 500*time.Millisecond })
		p, _ := e.handshake(t)
		p.connect(token(t, auth.RoleViewer))
		for range 5 {
			p.until("ping", func(s string) bool { return s == "2" })
			require.Equal(t, http.StatusOK, p.post("3"))
		}
		assert.Equal(t, 1, e.srv.Sessions())
	})
	t.Run("unanswered ping closes the session", func(t *testing.T) {
		e := start(t, func(o *Options) { o.PingInterval, o.PingTimeout = 50*time.Millisecond, 100*time.Millisecond })
		p, _ := e.handshake(t)
		p.connect(token(t, auth.RoleViewer))
		require.Eventually(t, func() bool { return e.srv.Sessions() == 0 }, 5*time.Second, 10*time.Millisecond)
		status, _ := p.get()
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, int64(1), e.srv.Stats().HeartbeatTimeouts.Load())
	})
	t.Run("no connect closes the session", func(t *testing.T) {
		e := start(t, func(o *Options) { o.ConnectTimeout = 100 * time.Millisecond })
		e.handshake(t)
		require.Eventually(t, func() bool { return e.srv.Sessions() == 0 }, 5*time.Second, 10*time.Millisecond)
	})
}

func TestPayloadLimit(t *testing.T) {
	e := start(t, func(o *Options) { o.MaxPayload = 1024 })
	t.Run("polling", func(t *testing.T) {
		p, hv := e.handshake(t)
		assert.Equal(t, 1024, hv.MaxPayload)
		status, _, _ := do(t, http.MethodPost, p.base, `42["ping","`+strings.Repeat("x", 2000)+`"]`, nil)
		assert.Equal(t, http.StatusRequestEntityTooLarge, status)
		status, _ = p.get()
		assert.Equal(t, http.StatusBadRequest, status, "the session is gone")
	})
	t.Run("websocket", func(t *testing.T) {
		c := e.dial(t, "")
		c.connect(token(t, auth.RoleViewer))
		require.NoError(t, c.conn.WriteMessage(websocket.TextMessage, []byte(`42["ping","`+strings.Repeat("x", 2000)+`"]`)))
		_, _, err := c.conn.ReadMessage()
		for err == nil {
			_, _, err = c.conn.ReadMessage()
		}
		assert.True(t, websocket.IsCloseError(err, websocket.CloseMessageTooBig), "%v", err)
	})
}

func TestOverlappingPolls(t *testing.T) {
	e := start(t, nil)
	p, _ := e.handshake(t)
	first := make(chan string, 1)
	go func() {
		_, body, _ := do(t, http.MethodGet, p.base, "", nil)
		first <- body
	}()
	require.Eventually(t, func() bool {
		s := e.srv.session(p.sid)
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.polling
	}, 5*time.Second, 5*time.Millisecond)
	status, _ := p.get()
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "1", <-first, "the waiting poll gets the close packet")
	assert.Zero(t, e.srv.Sessions())
}

func TestBadPackets(t *testing.T) {
	e := start(t, nil)
	p, _ := e.handshake(t)
	p.connect(token(t, auth.RoleViewer))
	tests := []struct{ name, packet string }{
		{"base64 binary", "bAQID"},
		{"binary event", `451-["a",{"_placeholder":true,"num":0}]`},
		{"malformed json", `42["a",`},
		{"unknown event", `42["nope",{}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, http.StatusOK, p.post(tc.packet))
			pkt := p.until("error", func(s string) bool { return strings.HasPrefix(s, `42["error",`) })
			assert.Contains(t, pkt, `"code":"bad_request"`)
		})
	}
	// Undecodable Engine.IO closes the session, like the reference server.
	require.Equal(t, http.StatusOK, p.post("9junk"))
	assert.Zero(t, e.srv.Sessions())
}

func TestNamespaces(t *testing.T) {
	e := start(t, nil)
	p, _ := e.handshake(t)
	require.Equal(t, http.StatusOK, p.post(`40/admin,{"token":"x"}`))
	pkt := p.until("connect error", func(s string) bool { return strings.HasPrefix(s, "44") })
	assert.True(t, strings.HasPrefix(pkt, `44/admin,{"message":"Invalid namespace"`), pkt)
	p.connect(token(t, auth.RoleViewer))
	// Socket.IO DISCONNECT ends the session (namespace / is the only one).
	require.Equal(t, http.StatusOK, p.post("41"))
	assert.Zero(t, e.srv.Sessions())
}

func TestOrigin(t *testing.T) {
	e := start(t, nil)
	host := strings.TrimPrefix(e.ts.URL, "http://")
	status, _, _ := do(t, http.MethodGet, e.url("transport=polling"), "", map[string]string{"Origin": "http://evil.example"})
	assert.Equal(t, http.StatusForbidden, status)
	status, _, hdr := do(t, http.MethodGet, e.url("transport=polling"), "", map[string]string{"Origin": "http://" + host})
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "http://"+host, hdr.Get("Access-Control-Allow-Origin"))
	status, _, _ = do(t, http.MethodOptions, e.url("transport=polling"), "", map[string]string{"Origin": "http://" + host})
	assert.Equal(t, http.StatusNoContent, status)
	_, _, err := websocket.DefaultDialer.Dial(strings.Replace(e.url("transport=websocket"), "http", "ws", 1),
		http.Header{"Origin": {"http://evil.example"}})
	assert.Error(t, err)

	allow := start(t, func(o *Options) {
		o.CheckOrigin = func(r *http.Request) bool { return r.Header.Get("Origin") == "https://dash.example" }
	})
	status, _, _ = do(t, http.MethodGet, allow.url("transport=polling"), "", map[string]string{"Origin": "https://dash.example"})
	assert.Equal(t, http.StatusOK, status)
}

func TestMaxSessions(t *testing.T) {
	e := start(t, func(o *Options) { o.MaxSessions = 2 })
	e.handshake(t)
	e.handshake(t)
	status, _, _ := do(t, http.MethodGet, e.url("transport=polling"), "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, status)
}

func TestSlowConsumer(t *testing.T) {
	t.Run("lossy frames are dropped and reported", func(t *testing.T) {
		e := start(t, func(o *Options) { o.QueueBytes = 8 << 10 })
		p, _ := e.handshake(t)
		p.connect(token(t, auth.RoleViewer))
		require.Equal(t, http.StatusOK, p.post(`42["subscribe_session",{"session_id":"s-slow"}]`))
		p.until("subscribed", func(s string) bool { return strings.HasPrefix(s, `42["subscribed"`) })
		for seq := int64(1); seq <= 60; seq++ {
			ingest(t, e.hub, protocol.TypeSessionProgress, "r-1", "s-slow", seq, nil)
		}
		pkt := p.until("dropped", func(s string) bool { return strings.HasPrefix(s, `42["dropped"`) })
		assert.Contains(t, pkt, `"room":"session:s-slow"`)
		assert.Equal(t, 1, e.srv.Sessions(), "lossy drops do not close")
		assert.Positive(t, e.srv.ConnStats().Queues.Dropped.Load())
	})
	t.Run("overflow closes", func(t *testing.T) {
		e := start(t, func(o *Options) { o.QueueBytes = 8 << 10 })
		p, _ := e.handshake(t)
		p.connect(token(t, auth.RoleViewer))
		require.Equal(t, http.StatusOK, p.post(`42["subscribe_session",{"session_id":"s-slow"}]`))
		p.until("subscribed", func(s string) bool { return strings.HasPrefix(s, `42["subscribed"`) })
		for seq := int64(1); seq <= 60 && e.srv.Sessions() > 0; seq++ {
			ingest(t, e.hub, protocol.TypeSessionStarted, "r-1", "s-slow", seq, nil)
		}
		require.Eventually(t, func() bool { return e.srv.Sessions() == 0 }, 5*time.Second, 5*time.Millisecond)
		assert.Equal(t, int64(1), e.srv.ConnStats().SlowCloses.Load())
		assert.Zero(t, e.hub.Counts().Subscribers, "the session left the hub")
	})
}

func TestTokenExpiry(t *testing.T) {
	e := start(t, nil)
	tok, err := auth.Mint(testSecret, auth.MintOptions{Role: auth.RoleViewer, Robots: []string{"*"}, TTL: 1500 * time.Millisecond})
	require.NoError(t, err)
	p, _ := e.handshake(t)
	p.connect(tok)
	pkt := p.until("expiry error", func(s string) bool { return strings.HasPrefix(s, `42["error"`) })
	assert.Contains(t, pkt, `"code":"unauthorized"`)
	p.until("server disconnect", func(s string) bool { return s == "41" })
	require.Eventually(t, func() bool { return e.srv.Sessions() == 0 }, 5*time.Second, 5*time.Millisecond)
}

// wsClient is a raw Engine.IO WebSocket client.
type wsClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func (e *env) dial(t *testing.T, sid string) *wsClient {
	t.Helper()
	u := strings.Replace(e.url("transport=websocket"), "http", "ws", 1)
	if sid != "" {
		u += "&sid=" + sid
	}
	conn, _, err := websocket.DefaultDialer.Dial(u, nil)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	c := &wsClient{t: t, conn: conn}
	if sid == "" {
		open := c.read()
		require.True(t, strings.HasPrefix(open, "0{"), open)
		assert.Equal(t, []string{}, decodeJSON[handshakeView](t, []byte(open[1:])).Upgrades)
	}
	return c
}

func (c *wsClient) read() string {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, b, err := c.conn.ReadMessage()
	require.NoError(c.t, err)
	require.Equal(c.t, websocket.TextMessage, mt)
	return string(b)
}

func (c *wsClient) write(s string) {
	c.t.Helper()
	require.NoError(c.t, c.conn.WriteMessage(websocket.TextMessage, []byte(s)))
}

// until reads until a packet satisfies match, answering pings.
func (c *wsClient) until(what string, match func(string) bool) string {
	c.t.Helper()
	for {
		s := c.read()
		if match(s) {
			return s
		}
		if s == "2" {
			c.write("3")
		}
	}
}

func (c *wsClient) connect(tok string) {
	c.t.Helper()
	c.write(`40{"token":"` + tok + `"}`)
	c.until("connect", func(s string) bool { return strings.HasPrefix(s, "40{") })
	c.until("connected", func(s string) bool { return strings.HasPrefix(s, `42["connected"`) })
}

func TestWebSocketDirect(t *testing.T) {
	e := start(t, func(o *Options) { o.PingInterval = 50 * time.Millisecond })
	c := e.dial(t, "")
	c.connect(token(t, auth.RoleViewer))
	assert.Equal(t, "2", c.until("ping", func(s string) bool { return s == "2" }))
	c.write("3")
	c.write(`42["ping"]`)
	c.until("pong", func(s string) bool { return strings.HasPrefix(s, `42["pong"`) })
	// Polling requests on a WebSocket session are refused.
	status, _, _ := do(t, http.MethodGet, e.url("transport=polling&sid="+e.srv.snapshotSessions(nil)[0].sid), "", nil)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, int64(1), e.srv.Stats().WebSockets.Load())
}

func TestUpgrade(t *testing.T) {
	e := start(t, func(o *Options) { o.PingInterval = time.Hour })
	p, _ := e.handshake(t)
	p.connect(token(t, auth.RoleViewer))
	pending := make(chan string, 1)
	go func() {
		_, body, _ := do(t, http.MethodGet, p.base, "", nil)
		pending <- body
	}()
	require.Eventually(t, func() bool {
		s := e.srv.session(p.sid)
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.polling
	}, 5*time.Second, 5*time.Millisecond)
	c := e.dial(t, p.sid)
	c.write("2probe")
	assert.Equal(t, "3probe", c.read())
	assert.Equal(t, "6", <-pending, "the waiting poll is released with a noop")
	c.write("5")
	c.write(`421["ping",{"timestamp":1}]`)
	ack := c.until("ack", func(s string) bool { return strings.HasPrefix(s, "431[") })
	assert.Contains(t, ack, `"timestamp":1`)
	status, _ := p.get()
	assert.Equal(t, http.StatusBadRequest, status, "polling is over after the upgrade")
	assert.Equal(t, int64(1), e.srv.Stats().Upgrades.Load())

	// A second probe on an upgraded session is refused.
	u := strings.Replace(e.url("transport=websocket&sid="+p.sid), "http", "ws", 1)
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	require.Error(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestShutdown(t *testing.T) {
	e := start(t, nil)
	c := e.dial(t, "")
	c.connect(token(t, auth.RoleViewer))
	p, _ := e.handshake(t)
	got := make(chan string, 1)
	go func() {
		_, body, _ := do(t, http.MethodGet, p.base, "", nil)
		got <- body
	}()
	require.Eventually(t, func() bool {
		s := e.srv.session(p.sid)
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.polling
	}, 5*time.Second, 5*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.srv.Shutdown(ctx))
	var err error
	for err == nil {
		_, _, err = c.conn.ReadMessage()
	}
	assert.True(t, websocket.IsCloseError(err, websocket.CloseGoingAway), "%v", err)
	assert.Equal(t, "1", <-got)
	status, _, _ := do(t, http.MethodGet, e.url("transport=polling"), "", nil)
	assert.Equal(t, http.StatusServiceUnavailable, status)
}

// A long-poll waits up to a ping interval, longer than a relay's HTTP
// WriteTimeout may be; the answer must still get through.
func TestLongPollOutlivesHTTPWriteTimeout(t *testing.T) {
	e := startHTTP(t, func(o *Options) { o.PingInterval = 400 * time.Millisecond },
		func(s *http.Server) { s.WriteTimeout = 100 * time.Millisecond })
	p, _ := e.handshake(t)
	p.connect(token(t, auth.RoleViewer))
	assert.Equal(t, "2", p.until("ping", func(s string) bool { return s == "2" }))
}

func TestAllowOrigins(t *testing.T) {
	req := func(origin, host string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://"+host+"/socket.io/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		return r
	}
	tests := []struct {
		name    string
		list    []string
		origin  string
		allowed bool
	}{
		{"no origin header", []string{"https://dash.example"}, "", true},
		{"listed", []string{"https://dash.example"}, "https://DASH.example", true},
		{"not listed", []string{"https://dash.example"}, "https://evil.example", false},
		{"star", []string{"*"}, "https://any.example", true},
		{"empty list: same host", nil, "http://relay.example:8080", true},
		{"empty list: other host", nil, "http://evil.example", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.allowed, AllowOrigins(tc.list)(req(tc.origin, "relay.example:8080")))
		})
	}
}

// Without auth.token, the token of the handshake request counts, as on /ws.
func TestTokenFromHandshakeRequest(t *testing.T) {
	e := start(t, nil)
	status, body, _ := do(t, http.MethodGet, e.url("transport=polling&token="+token(t, auth.RoleViewer)), "", nil)
	require.Equal(t, http.StatusOK, status)
	hv := decodeJSON[handshakeView](t, []byte(body[1:]))
	p := &poller{t: t, base: e.url("transport=polling&sid=" + hv.SID), sid: hv.SID}
	require.Equal(t, http.StatusOK, p.post("40"))
	p.until("connect", func(s string) bool { return strings.HasPrefix(s, "40{") })

	// A wrong auth.token is not rescued by the request's token.
	status, body, _ = do(t, http.MethodGet, e.url("transport=polling"), "", map[string]string{"Authorization": "Bearer " + token(t, auth.RoleViewer)})
	require.Equal(t, http.StatusOK, status)
	hv = decodeJSON[handshakeView](t, []byte(body[1:]))
	p = &poller{t: t, base: e.url("transport=polling&sid=" + hv.SID), sid: hv.SID}
	require.Equal(t, http.StatusOK, p.post(`40{"token":"wrong"}`))
	pkt := p.until("connect error", func(s string) bool { return strings.HasPrefix(s, "44") })
	assert.Contains(t, pkt, `"code":"unauthorized"`)
}
