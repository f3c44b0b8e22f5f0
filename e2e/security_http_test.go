package e2e

// Issue 9 items 8, 9 and 11 against the real fleet-relay binary: each test
// performs the attack over plain HTTP/TCP and expects it refused.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/protocol"
)

const httpSecret = "http-attack-secret-0123456789"

// startRelayWith runs fleet-relay on its embedded broker with a config file
// (yaml, may be empty) and extra environment, and waits until it is ready.
func startRelayWith(t *testing.T, yaml string, env ...string) *system {
	t.Helper()
	s := &system{httpAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)), mqttAddr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	conf := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, "fleet-relay", append([]string{"FLEET_RELAY_LISTEN=" + s.httpAddr, "FLEET_RELAY_MQTT_BROKER=",
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=" + s.mqttAddr, "FLEET_RELAY_AUTH_SECRET="}, env...), "--config", conf)
	waitReady(t, s, 30*time.Second)
	return s
}

// get does one request with an optional token and extra headers; Host
// overrides the Host header.
func get(t *testing.T, url, token string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// publishStatus publishes r's retained online status to the embedded broker.
func publishStatus(t *testing.T, s *system, robots ...string) {
	t.Helper()
	rb := newPubRobot(t, "tcp://"+s.mqttAddr, "sim")
	for _, r := range robots {
		ev := protocol.NewEvent(r, protocol.RobotStatus{State: "online", AgentVersion: "1.0.0", Hostname: "secret-host-" + r})
		ev.Seq = 1
		b, err := protocol.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		if tok := rb.c.Publish(protocol.MustTopics("").Status(r), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish status: %v", tok.Error())
		}
	}
}

// TestHTTPAPINeedsToken (item 8): with auth on, /api/v1/* answers nothing
// without a token, and a token scoped to r-1 sees only r-1.
func TestHTTPAPINeedsToken(t *testing.T) {
	s := startRelay(t, "FLEET_RELAY_AUTH_SECRET="+httpSecret)
	publishStatus(t, s, "r-1", "r-2")
	base := "http://" + s.httpAddr
	admin := mintToken(t, httpSecret, "admin", "*")
	eventually(t, 10*time.Second, "both robots known", func() bool {
		_, body := get(t, base+"/api/v1/robots", admin, nil)
		return strings.Contains(body, "secret-host-r-1") && strings.Contains(body, "secret-host-r-2")
	})

	for _, path := range []string{"/api/v1/robots", "/api/v1/stats", "/api/v1/schema", "/api/v1/robots/r-2/metrics",
		"/api/v1/fleet/metrics", "/api/v1/robots?token=garbage"} {
		code, body := get(t, base+path, "", nil)
		if code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401\n%.300s", path, code, body)
		}
	}

	scoped := mintToken(t, httpSecret, "viewer", "r-1")
	code, body := get(t, base+"/api/v1/robots", scoped, nil)
	if code != http.StatusOK {
		t.Fatalf("scoped /api/v1/robots: %d %s", code, body)
	}
	var v struct {
		Robots []struct {
			ID string `json:"id"`
		} `json:"robots"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Robots) != 1 || v.Robots[0].ID != "r-1" || strings.Contains(body, "secret-host-r-2") {
		t.Errorf("a token for r-1 sees %s", body)
	}
	if code, _ := get(t, base+"/api/v1/robots/r-2/metrics", scoped, nil); code != http.StatusForbidden {
		t.Errorf("r-1's token on r-2's metrics: %d, want 403", code)
	}
	if code, _ := get(t, base+"/api/v1/stats", scoped, nil); code != http.StatusForbidden {
		t.Errorf("r-1's token on fleet-wide stats: %d, want 403", code)
	}
	if code, _ := get(t, base+"/api/v1/stats", admin, nil); code != http.StatusOK {
		t.Errorf("admin on stats: %d", code)
	}

	// /metrics on the main listener: an admin token for every robot.
	if code, _ := get(t, base+"/metrics", "", nil); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %d, want 401", code)
	}
	if code, _ := get(t, base+"/metrics", scoped, nil); code != http.StatusForbidden {
		t.Errorf("/metrics with a viewer token: %d, want 403", code)
	}
	if code, body := get(t, base+"/metrics", admin, nil); code != http.StatusOK || !strings.Contains(body, "fleet_relay_messages_in_total") {
		t.Errorf("/metrics with an admin token: %d", code)
	}
}

// TestHTTPMetricsListener (item 8): prometheus.listen serves /metrics on a
// loopback listener of its own, without a token, and the main listener no
// longer serves it.
func TestHTTPMetricsListener(t *testing.T) {
	metricsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	s := startRelayWith(t, "prometheus:\n  listen: "+metricsAddr+"\n", "FLEET_RELAY_AUTH_SECRET="+httpSecret)
	if code, body := get(t, "http://"+metricsAddr+"/metrics", "", nil); code != http.StatusOK ||
		!strings.Contains(body, "fleet_relay_http_conns_refused_total") {
		t.Errorf("separate /metrics: %d", code)
	}
	if code, _ := get(t, "http://"+s.httpAddr+"/metrics", mintToken(t, httpSecret, "admin", "*"), nil); code != http.StatusNotFound {
		t.Errorf("/metrics on the main listener with prometheus.listen set: %d, want 404", code)
	}
}

// TestHTTPDNSRebinding (item 9): with auth off, a page on evil.example
// re-bound to 127.0.0.1 reaches the relay with Host evil.example and Origin
// http://evil.example. It must get neither the API nor an admin /ws.
func TestHTTPDNSRebinding(t *testing.T) {
	s := startRelay(t)
	publishStatus(t, s, "r-1")
	_, port, _ := net.SplitHostPort(s.httpAddr)
	evilHost := "evil.example:" + port
	evil := map[string]string{"Host": evilHost, "Origin": "http://" + evilHost}
	base := "http://" + s.httpAddr

	if code, body := get(t, base+"/api/v1/robots", "", evil); code != http.StatusForbidden {
		t.Errorf("re-bound page reads /api/v1/robots: %d, want 403\n%.200s", code, body)
	}
	if code, _ := get(t, base+"/api/v1/robots", "", map[string]string{"Host": evilHost}); code != http.StatusForbidden {
		t.Errorf("Host evil.example without Origin: %d, want 403", code)
	}
	if code, _ := get(t, base+"/api/v1/robots", "", map[string]string{"Origin": "http://evil.example"}); code != http.StatusForbidden {
		t.Errorf("loopback Host with Origin evil.example: %d, want 403", code)
	}
	hdr := http.Header{"Origin": {"http://" + evilHost}}
	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("tcp", s.httpAddr) }}
	c, resp, err := d.Dial("ws://"+evilHost+"/ws", hdr)
	if err == nil {
		c.Close()
		t.Errorf("re-bound page got an admin /ws")
	} else if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("re-bound /ws: %v, want 403", err)
	}

	// Loopback names and addresses still work, with or without an Origin.
	for _, h := range []map[string]string{nil, {"Host": "localhost:" + port}, {"Origin": "http://127.0.0.1:" + port},
		{"Host": "localhost:" + port, "Origin": "http://localhost:" + port}, {"Host": "[::1]:" + port}} {
		if code, _ := get(t, base+"/api/v1/robots", "", h); code != http.StatusOK {
			t.Errorf("loopback request %v: %d, want 200", h, code)
		}
	}
}

// TestHTTPTimeoutsAndConnCap (item 11): an idle keep-alive connection and a
// trickled body are closed; an upgraded WebSocket outlives both timeouts;
// one address cannot hold more than http.max_conns_per_addr connections.
func TestHTTPTimeoutsAndConnCap(t *testing.T) {
	s := startRelayWith(t, "http:\n  idle_timeout: 1s\n  body_timeout: 1s\nws:\n  heartbeat: 30s\n")

	t.Run("idle keep-alive", func(t *testing.T) {
		c := rawConn(t, s)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", s.httpAddr)
		r := bufio.NewReader(c)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !closedWithin(c, r, 15*time.Second) {
			t.Errorf("an idle keep-alive connection stayed open past idle_timeout")
		}
	})

	t.Run("trickled body", func(t *testing.T) {
		c := rawConn(t, s)
		fmt.Fprintf(c, "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n", s.httpAddr)
		closed := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, c) // until the server closes
			close(closed)
		}()
		deadline := time.After(20 * time.Second)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-closed:
				return
			case <-deadline:
				t.Fatalf("a body trickled at 1 byte per 300ms kept the connection for 20s")
			case <-tick.C:
				_, _ = c.Write([]byte("x"))
			}
		}
	})

	t.Run("websocket outlives the timeouts", func(t *testing.T) {
		w := dial(t, s)
		time.Sleep(3 * time.Second) // > idle_timeout and body_timeout
		w.send(map[string]any{"op": "ping", "ref": "still-here"})
		w.waitFor(10*time.Second, "pong", func(f map[string]any) bool { return f["type"] == "pong" })
	})

	t.Run("connections per address", func(t *testing.T) {
		// A relay whose idle timeout cannot free a slot during the test;
		// connections from an address of their own, so no other connection
		// of the test counts against the cap.
		s := startRelayWith(t, "http:\n  max_conns_per_addr: 6\n  limit_loopback: true\n")
		const from = "127.0.0.5"
		var held []net.Conn
		for i := 0; i < 6; i++ {
			c := rawConnFrom(t, s, from)
			held = append(held, c)
		}
		for i, c := range held { // each is served: none was refused
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", s.httpAddr)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("connection %d within the cap: %v", i+1, err)
			}
		}
		extra := rawConnFrom(t, s, from)
		r := bufio.NewReader(extra)
		if !closedWithin(extra, r, 10*time.Second) {
			t.Fatalf("a 7th connection from one address was kept (max_conns_per_addr 6)")
		}
		held[0].Close()
		eventually(t, 10*time.Second, "a slot after closing one", func() bool {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			c, err := d.Dial("tcp", s.httpAddr)
			if err != nil {
				return false
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", s.httpAddr)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err == nil && resp.StatusCode == http.StatusOK
		})
	})
}

func rawConn(t *testing.T, s *system) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func rawConnFrom(t *testing.T, s *system, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c, err := d.Dial("tcp", s.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports whether the server closes c (EOF or reset) within d.
func closedWithin(c net.Conn, r *bufio.Reader, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := r.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}
