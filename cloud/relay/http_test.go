package relay_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// TestHTTPEndpoints: /, /healthz, /readyz, /metrics and /api/v1/*.
func TestHTTPEndpoints(t *testing.T) {
	cfg := testConfig()
	r := startRelay(t, cfg)
	base := "http://" + r.Addr()
	rb := newRobot(t, r.BrokerURL(), "r-1")
	rb.send("", status("online"))
	rb.send("", metrics())
	c := connect(t, r, "")
	c.subscribe("robot:r-1")

	code, body := httpGet(t, base+"/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<title>Fleet dashboard</title>")
	code, body = httpGet(t, base+"/assets/app.js")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "/ws")
	code, _ = httpGet(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = httpGet(t, base+"/readyz")
	require.Equal(t, http.StatusOK, code)
	code, _ = httpGet(t, base+"/nope")
	require.Equal(t, http.StatusNotFound, code)

	require.Eventually(t, func() bool {
		_, body := httpGet(t, base+"/api/v1/robots")
		var v struct {
			Robots []struct {
				ID      string          `json:"id"`
				Status  json.RawMessage `json:"status"`
				Metrics json.RawMessage `json:"metrics"`
			} `json:"robots"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &v))
		return len(v.Robots) == 1 && v.Robots[0].ID == "r-1" && string(v.Robots[0].Metrics) != "null" && string(v.Robots[0].Status) != "null"
	}, wait, 20*time.Millisecond)

	_, body = httpGet(t, base+"/api/v1/stats")
	var st struct {
		Connections   int `json:"connections"`
		Rooms         int `json:"rooms"`
		Subscriptions int `json:"subscriptions"`
		Messages      struct {
			In      int `json:"in"`
			Out     int `json:"out"`
			Dropped int `json:"dropped"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	require.Equal(t, 1, st.Connections)
	require.Equal(t, 1, st.Rooms)
	require.Equal(t, 1, st.Subscriptions)
	require.Equal(t, 2, st.Messages.In)

	_, body = httpGet(t, base+"/api/v1/schema")
	var sc struct {
		Types []struct {
			Type    string          `json:"type"`
			Schema  json.RawMessage `json:"schema"`
			Example json.RawMessage `json:"example"`
		} `json:"types"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &sc))
	require.Len(t, sc.Types, len(protocol.Types()))
	for _, ty := range sc.Types {
		require.NotEmpty(t, ty.Schema, ty.Type)
		_, err := protocol.Decode(ty.Example)
		require.NoError(t, err, "example of %s", ty.Type)
	}

	_, body = httpGet(t, base+"/metrics")
	for _, m := range []string{"fleet_relay_connections 1", "fleet_relay_rooms 1", "fleet_relay_subscriptions 1",
		"fleet_relay_messages_in_total 2", "fleet_relay_messages_out_total", "fleet_relay_messages_dropped_total",
		"fleet_relay_messages_invalid_total", "fleet_relay_slow_consumer_closes_total", "fleet_relay_queue_bytes",
		"fleet_relay_mqtt_reconnects_total", "fleet_relay_fanout_latency_seconds_bucket", "fleet_relay_mqtt_ready 1"} {
		require.Contains(t, body, m)
	}
	// Last, after every count: an Engine.IO session is a connection too.
	code, _ = httpGet(t, base+"/socket.io/?EIO=4&transport=polling")
	require.Equal(t, http.StatusOK, code, "Socket.IO handshake")

}

// selfSigned writes a certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestTLS: HTTPS and WSS from config, and the embedded broker's TLS and
// WebSocket listeners carrying robot traffic.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	cfg := testConfig()
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	tlsPort, wsPort := brokertest.FreePort(t), brokertest.FreePort(t)
	cfg.Embedded.TLSListen = "127.0.0.1:" + strconv.Itoa(tlsPort)
	cfg.Embedded.TLSCertFile, cfg.Embedded.TLSKeyFile = certFile, keyFile
	cfg.Embedded.WSListen = "127.0.0.1:" + strconv.Itoa(wsPort)
	r := startRelay(t, cfg)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + r.Addr() + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}}
	conn, _, err := d.Dial("wss://"+r.Addr()+"/ws", nil)
	require.NoError(t, err)
	c := startReading(t, conn)
	require.Equal(t, "connected", c.next().Type)
	c.subscribe("fleet")

	// A robot over MQTT/TLS and one over MQTT/WebSocket.
	brokertest.WaitPort(t, cfg.Embedded.WSListen, wait)
	r1 := newRobotTLS(t, "ssl://"+cfg.Embedded.TLSListen, "r-tls", pool)
	r2 := newRobot(t, "ws://"+cfg.Embedded.WSListen+"/", "r-ws")
	e1 := r1.send("", status("online"))
	e2 := r2.send("", status("online"))
	seen := map[string]bool{}
	c.until(func(f frame) bool {
		if f.Type == "event" {
			seen[f.envelope(t).ID] = true
		}
		return seen[e1.ID] && seen[e2.ID]
	})
}

// TestExternalBrokerOverWebSocket: the relay reaches Mosquitto through its
// websockets listener (ws:// URL).
func TestExternalBrokerOverWebSocket(t *testing.T) {
	m := brokertest.StartMosquitto(t, brokertest.Options{WebSockets: true})
	cfg := testConfig()
	cfg.MQTT.Broker = "ws://127.0.0.1:" + strconv.Itoa(m.WSPort) + "/"
	r := startRelay(t, cfg)
	c := connect(t, r, "")
	c.subscribe("robot:r-1")
	ev := newRobot(t, m.URL(), "r-1").send("", notification("over ws"))
	fs := c.until(func(f frame) bool { return f.Type == "event" })
	require.Equal(t, ev.ID, fs[len(fs)-1].envelope(t).ID)
}

// Go's profiles are served only when asked for, and only on the separate
// metrics listener: never on the main one, which faces the dashboards.
func TestPprofOnlyOnTheMetricsListener(t *testing.T) {
	get := func(url string) int {
		resp, err := http.Get(url)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	cfg := testConfig()
	cfg.Prometheus.Listen = "127.0.0.1:0"
	r := startRelay(t, cfg)
	require.Equal(t, http.StatusNotFound, get("http://"+r.MetricsAddr()+"/debug/pprof/"), "pprof off by default")

	cfg.Prometheus.Pprof = true
	r = startRelay(t, cfg)
	require.Equal(t, http.StatusOK, get("http://"+r.MetricsAddr()+"/debug/pprof/"))
	require.Equal(t, http.StatusOK, get("http://"+r.MetricsAddr()+"/debug/pprof/profile?seconds=1"))
	require.NotEqual(t, http.StatusOK, get("http://"+r.Addr()+"/debug/pprof/"), "pprof on the main listener")

	cfg.Prometheus.Listen = ""
	_, err := relay.New(cfg, testLogger(t))
	require.ErrorContains(t, err, "prometheus.pprof: needs prometheus.listen")
}
