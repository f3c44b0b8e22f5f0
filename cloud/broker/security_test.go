package broker_test

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/internal/brokertest"
)

// mosquittoPasswd writes a password file with the real mosquitto_passwd
// (extra: e.g. "-H", "sha512") and returns the hash it wrote. A missing
// binary fails the test: `make test-deps` installs Mosquitto.
func mosquittoPasswd(t *testing.T, user, pass string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_passwd")
	require.NoError(t, err, "mosquitto_passwd not found: run `make test-deps` (apt-get install mosquitto)")
	file := filepath.Join(t.TempDir(), "passwd")
	args := append(append([]string{}, extra...), "-b", "-c", file, user, pass)
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	_, hash, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	require.True(t, ok, "password file %q", b)
	return hash
}

// TestPasswordFormats is attack 7: accounts keep salted slow hashes, and
// hashes made by the real mosquitto_passwd ($7$ PBKDF2-SHA512, $6$) and
// by HashPassword (pbkdf2, bcrypt) authenticate exactly their password.
func TestPasswordFormats(t *testing.T) {
	pbkdf2Ours, err := broker.HashPassword("pw-ours", broker.FormatPBKDF2, 0)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(pbkdf2Ours, "$7$20000$"), pbkdf2Ours)
	bcryptOurs, err := broker.HashPassword("pw-bcrypt", broker.FormatBcrypt, 4)
	require.NoError(t, err)
	mosq7 := mosquittoPasswd(t, "r-1", "pw-mosq7")
	require.True(t, strings.HasPrefix(mosq7, "$7$101$"), mosq7)
	mosq6 := mosquittoPasswd(t, "r-2", "pw-mosq6", "-H", "sha512")
	require.True(t, strings.HasPrefix(mosq6, "$6$"), mosq6)

	users, err := broker.ReadPasswordFile(strings.NewReader("# robots\nr-1:" + mosq7 + "\nr-2:" + mosq6 + "\n\nr-3:" + pbkdf2Ours + "\n"))
	require.NoError(t, err)
	b := start(t, append(users, broker.User{Username: "r-4", Password: bcryptOurs}))
	for _, c := range []struct{ user, right string }{{"r-1", "pw-mosq7"}, {"r-2", "pw-mosq6"}, {"r-3", "pw-ours"}, {"r-4", "pw-bcrypt"}} {
		_, err := client(t, b, c.user, c.right)
		require.NoError(t, err, c.user)
		_, err = client(t, b, c.user, c.right+"x")
		require.Error(t, err, c.user)
		_, err = client(t, b, c.user, "")
		require.Error(t, err, c.user)
	}

	_, err = broker.ReadPasswordFile(strings.NewReader("r-1:$7$101$notbase64!$x\n"))
	require.ErrorContains(t, err, "line 1 (r-1)")
	_, err = broker.New(broker.Options{Listen: "127.0.0.1:0", Logger: quiet(), Users: []broker.User{{Username: "r-1", Password: "$2b$xx"}}})
	require.ErrorIs(t, err, broker.ErrConfig)
}

// TestLoginThrottle is attack 7: after a burst of failed logins from one
// address, that address's logins are refused unchecked (even with the
// right password) while other addresses and the relay's own account still
// get in.
func TestLoginThrottle(t *testing.T) {
	b := startWith(t, broker.Options{Users: robots, Limits: broker.Limits{AuthFailureBurst: 3, AuthFailuresPerMinute: 1}})
	try := func(from, user, pass string) byte {
		t.Helper()
		conn, code, err := brokertest.RawConnect(b.Addr(), brokertest.Connect{ClientID: user, Username: user, Password: pass, LocalAddr: from})
		require.NoError(t, err)
		conn.Close()
		return code
	}
	for range 3 {
		require.Equal(t, brokertest.ConnNotAuthorized, try("127.0.0.1", "r-1", "guess"))
	}
	require.Equal(t, brokertest.ConnServerUnavailable, try("127.0.0.1", "r-1", "pw1"), "throttled, even with the right password")
	require.Equal(t, brokertest.ConnServerUnavailable, try("127.0.0.1", "r-2", "pw2"))
	require.EqualValues(t, 3, b.Stats().AuthFailures.Load())
	require.EqualValues(t, 2, b.Stats().AuthThrottled.Load())
	require.Equal(t, brokertest.ConnAccepted, try("127.0.0.2", "r-1", "pw1"), "another address")
	relay := relayClient(t, b) // from 127.0.0.1
	require.True(t, relay.IsConnectionOpen())

	reg := prometheus.NewRegistry()
	reg.MustRegister(b.Collectors()...)
	require.Equal(t, 3.0, counterValue(t, reg, "fleet_relay_embedded_broker_auth_failures_total"))
	require.Equal(t, 2.0, counterValue(t, reg, "fleet_relay_embedded_broker_auth_throttled_total"))
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metric(t, reg, name).GetCounter().GetValue()
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return metric(t, reg, name).GetGauge().GetValue()
}

func metric(t *testing.T, reg *prometheus.Registry, name string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// TestWSOrigin is attack 6: the MQTT-over-WebSocket listener refuses
// browser pages from other origins, as /ws does; with anonymous access it
// also refuses a DNS-rebound page (attacker's name in Host and Origin).
func TestWSOrigin(t *testing.T) {
	dial := func(addr, host, origin string) int {
		t.Helper()
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		if host != "" {
			h.Set("Host", host)
		}
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}}
		c, resp, err := d.Dial("ws://"+addr+"/", h)
		if err == nil {
			c.Close()
			return http.StatusSwitchingProtocols
		}
		require.NotNil(t, resp, "dial: %v", err)
		return resp.StatusCode
	}

	b := startWith(t, broker.Options{Users: robots, WSListen: "127.0.0.1:0"})
	addr := b.WSAddr()
	require.Equal(t, http.StatusForbidden, dial(addr, "", "http://evil.example"))
	require.Equal(t, http.StatusSwitchingProtocols, dial(addr, "", ""), "no Origin: not a browser")
	require.Equal(t, http.StatusSwitchingProtocols, dial(addr, "", "http://"+addr), "same host")
	require.EqualValues(t, 1, b.Stats().OriginRefused.Load())
	_, err := clientAs(t, "ws://"+addr+"/", "r-1", "r-1", "pw1")
	require.NoError(t, err, "MQTT over WebSocket")

	anon := startWith(t, broker.Options{WSListen: "127.0.0.1:0"})
	port := anon.WSAddr()[strings.LastIndex(anon.WSAddr(), ":"):]
	require.Equal(t, http.StatusForbidden, dial(anon.WSAddr(), "rebind.example"+port, "http://rebind.example"+port), "DNS rebinding")
	require.Equal(t, http.StatusSwitchingProtocols, dial(anon.WSAddr(), "localhost"+port, "http://localhost"+port))

	allow := startWith(t, broker.Options{Users: robots, WSListen: "127.0.0.1:0", WSAllowedOrigins: []string{"https://dash.example.com"}})
	require.Equal(t, http.StatusSwitchingProtocols, dial(allow.WSAddr(), "", "https://dash.example.com"))
	require.Equal(t, http.StatusForbidden, dial(allow.WSAddr(), "", "http://"+allow.WSAddr()), "a list replaces same-host")
}
