package relay_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

const secret = "test-secret-0123456789"

func mint(t testing.TB, role auth.Role, robots []string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Mint([]byte(secret), auth.MintOptions{Role: role, Robots: robots, TTL: ttl})
	require.NoError(t, err)
	return tok
}

// TestAuthMatrix: who may connect, subscribe and command (spec §5).
func TestAuthMatrix(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	require.NoError(t, err)
	pubFile := filepath.Join(t.TempDir(), "pub.pem")
	require.NoError(t, os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))

	cfg := testConfig()
	cfg.Auth.Secret = secret
	cfg.Auth.PublicKeyFile = pubFile
	cfg.Auth.StaticTokens = []auth.StaticToken{{Token: "static-viewer-token-1234", Role: "viewer", Robots: []string{"r-1"}}}
	cfg.AllowedOrigins = []string{"https://dash.example.com"}
	cfg.Commands.Timeout = 300 * time.Millisecond
	r := startRelay(t, cfg)
	rb := newRobot(t, r.BrokerURL(), "r-1")
	rb.send("", status("online"))
	newRobot(t, r.BrokerURL(), "r-9").send("s-9", queued())

	es256 := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ecKey)
		require.NoError(t, err)
		return s
	}
	otherSecret, err := auth.Mint([]byte("another-secret-xxxxxxxx"), auth.MintOptions{Role: auth.RoleAdmin, Robots: []string{"*"}, TTL: time.Hour})
	require.NoError(t, err)

	t.Run("handshake", func(t *testing.T) {
		cases := []struct {
			name   string
			token  string
			header http.Header
			want   int
		}{
			{"no token", "", nil, http.StatusUnauthorized},
			{"bad signature", otherSecret, nil, http.StatusUnauthorized},
			{"garbage", "not.a.jwt", nil, http.StatusUnauthorized},
			{"expired", mint(t, auth.RoleAdmin, []string{"*"}, time.Nanosecond), nil, http.StatusUnauthorized},
			{"no robots claim", es256(jwt.MapClaims{"role": "admin", "exp": time.Now().Add(time.Hour).Unix()}), nil, http.StatusUnauthorized},
			{"bad role", es256(jwt.MapClaims{"role": "root", "robots": "*", "exp": time.Now().Add(time.Hour).Unix()}), nil, http.StatusUnauthorized},
			{"hs256 query", mint(t, auth.RoleViewer, []string{"*"}, time.Hour), nil, http.StatusSwitchingProtocols},
			{"es256", es256(jwt.MapClaims{"role": "viewer", "robots": []string{"r-*"}, "exp": time.Now().Add(time.Hour).Unix()}), nil, http.StatusSwitchingProtocols},
			{"static", "static-viewer-token-1234", nil, http.StatusSwitchingProtocols},
			{"bearer header", "", http.Header{"Authorization": {"Bearer " + mint(t, auth.RoleViewer, []string{"*"}, time.Hour)}}, http.StatusSwitchingProtocols},
			{"origin allowed", mint(t, auth.RoleViewer, []string{"*"}, time.Hour), http.Header{"Origin": {"https://dash.example.com"}}, http.StatusSwitchingProtocols},
			{"origin refused", mint(t, auth.RoleViewer, []string{"*"}, time.Hour), http.Header{"Origin": {"https://evil.example.com"}}, http.StatusForbidden},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				conn, resp, err := dial(t, r, tc.token, tc.header)
				require.NotNil(t, resp, "dial: %v", err)
				resp.Body.Close()
				require.Equal(t, tc.want, resp.StatusCode)
				if conn != nil {
					conn.Close()
				}
			})
		}
	})

	t.Run("subscribe", func(t *testing.T) {
		cases := []struct {
			name  string
			token string
			room  string
			code  string // "" = subscribed
		}{
			{"robots claim covers", mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour), "robot:r-1", ""},
			{"glob covers", mint(t, auth.RoleViewer, []string{"r-*"}, time.Hour), "robot:r-1", ""},
			{"robots claim outside", mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour), "robot:r-9", "forbidden"},
			{"session of a robot outside", mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour), "session:s-9", "forbidden"},
			{"session of a robot inside", mint(t, auth.RoleViewer, []string{"r-9"}, time.Hour), "session:s-9", ""},
			// Spec §5: a session not seen yet may be subscribed by any token;
			// delivery then filters by the grant.
			{"unseen session with a scoped token", mint(t, auth.RoleViewer, []string{"r-*"}, time.Hour), "session:s-new", ""},
			{"unseen session with *", mint(t, auth.RoleViewer, []string{"*"}, time.Hour), "session:s-new", ""},
			{"fleet for anyone", mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour), "fleet", ""},
			{"static token outside", "static-viewer-token-1234", "robot:r-9", "forbidden"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := connect(t, r, tc.token)
				c.send(map[string]any{"op": "subscribe", "room": tc.room, "ref": "s"})
				f := c.next()
				if tc.code == "" {
					require.Equal(t, "subscribed", f.Type, "%s", f.raw)
					return
				}
				require.Equal(t, "error", f.Type, "%s", f.raw)
				require.Equal(t, tc.code, f.Code)
				require.Equal(t, `"s"`, string(f.Ref))
			})
		}
	})

	t.Run("fleet snapshot is filtered by the robots claim", func(t *testing.T) {
		c := connect(t, r, mint(t, auth.RoleViewer, []string{"r-9"}, time.Hour))
		f := c.subscribe("fleet")
		for _, raw := range f.Snapshot {
			ev, err := protocol.Decode(raw)
			require.NoError(t, err)
			require.Equal(t, "r-9", ev.Robot)
		}
	})

	t.Run("command", func(t *testing.T) {
		cases := []struct {
			name  string
			token string
			robot string
			code  string
		}{
			{"viewer may not command", mint(t, auth.RoleViewer, []string{"*"}, time.Hour), "r-1", "forbidden"},
			{"robots claim outside", mint(t, auth.RoleOperator, []string{"r-2"}, time.Hour), "r-1", "forbidden"},
			{"operator inside: sent, times out", mint(t, auth.RoleOperator, []string{"r-1"}, time.Hour), "r-1", "robot_timeout"},
			{"admin: sent, times out", mint(t, auth.RoleAdmin, []string{"*"}, time.Hour), "r-1", "robot_timeout"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := connect(t, r, tc.token)
				c.send(map[string]any{"op": "command", "robot": tc.robot, "name": "ping", "ref": 5})
				f := c.next()
				require.Equal(t, "error", f.Type, "%s", f.raw)
				require.Equal(t, tc.code, f.Code, "%s", f.raw)
				require.Equal(t, "5", string(f.Ref))
			})
		}
	})

	t.Run("expiry mid-connection closes", func(t *testing.T) {
		c := connect(t, r, mint(t, auth.RoleViewer, []string{"*"}, 1500*time.Millisecond))
		err := c.closeErr()
		require.Equal(t, 4001, closeCode(err), "close: %v", err)
	})
}

// TestSecureByDefault: auth off on a non-loopback address is refused unless
// insecure_no_auth.
func TestSecureByDefault(t *testing.T) {
	cfg := testConfig()
	cfg.Listen = "0.0.0.0:0"
	_, err := newRelayNoCleanup(t, cfg)
	require.ErrorContains(t, err, "auth: is off")
	require.ErrorContains(t, err, "--insecure-no-auth")
	cfg.InsecureNoAuth = true
	r := startRelay(t, cfg)
	require.NotEmpty(t, r.Addr())
}
