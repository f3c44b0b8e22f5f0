package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
)

func pubPEM(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func claims(role string, robots any, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": "u", "role": role, "robots": robots, "exp": exp.Unix()}
}

func TestAuthenticate(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	secret := []byte("s3cret-s3cret-s3cret")
	hour := time.Now().Add(time.Hour)
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		require.NoError(t, err)
		return s
	}
	hsA, err := auth.New(auth.Options{Secret: secret, StaticTokens: []auth.StaticToken{{Token: "static-token-0123456789", Role: "operator", Robots: []string{"r-1"}}}})
	require.NoError(t, err)
	rsA, err := auth.New(auth.Options{PublicKeyPEM: pubPEM(t, &rsaKey.PublicKey)})
	require.NoError(t, err)
	esA, err := auth.New(auth.Options{PublicKeyPEM: pubPEM(t, &ecKey.PublicKey)})
	require.NoError(t, err)

	cases := []struct {
		name  string
		a     *auth.Authenticator
		token string
		err   error
		role  auth.Role
	}{
		{"hs256", hsA, sign(jwt.SigningMethodHS256, secret, claims("operator", []string{"r-*"}, hour)), nil, auth.RoleOperator},
		{"robots as string", hsA, sign(jwt.SigningMethodHS256, secret, claims("viewer", "r-1, r-2", hour)), nil, auth.RoleViewer},
		{"static", hsA, "static-token-0123456789", nil, auth.RoleOperator},
		{"no token", hsA, "", auth.ErrNoToken, ""},
		{"wrong secret", hsA, sign(jwt.SigningMethodHS256, []byte("other-secret-xxxxxx"), claims("admin", "*", hour)), auth.ErrInvalidToken, ""},
		{"expired", hsA, sign(jwt.SigningMethodHS256, secret, claims("admin", "*", time.Now().Add(-time.Minute))), auth.ErrExpired, ""},
		{"no exp", hsA, sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"role": "admin", "robots": "*"}), auth.ErrInvalidToken, ""},
		{"bad role", hsA, sign(jwt.SigningMethodHS256, secret, claims("root", "*", hour)), auth.ErrBadClaims, ""},
		{"no robots", hsA, sign(jwt.SigningMethodHS256, secret, claims("admin", []string{}, hour)), auth.ErrBadClaims, ""},
		{"bad pattern", hsA, sign(jwt.SigningMethodHS256, secret, claims("admin", []string{"r-["}, hour)), auth.ErrBadClaims, ""},
		{"alg none", hsA, sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("admin", "*", hour)), auth.ErrInvalidToken, ""},
		{"rs256", rsA, sign(jwt.SigningMethodRS256, rsaKey, claims("admin", "*", hour)), nil, auth.RoleAdmin},
		{"hs256 on an rsa relay", rsA, sign(jwt.SigningMethodHS256, pubPEM(t, &rsaKey.PublicKey), claims("admin", "*", hour)), auth.ErrInvalidToken, ""},
		{"es256", esA, sign(jwt.SigningMethodES256, ecKey, claims("viewer", "*", hour)), nil, auth.RoleViewer},
		{"rs256 on an ec relay", esA, sign(jwt.SigningMethodRS256, rsaKey, claims("viewer", "*", hour)), auth.ErrInvalidToken, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.a.Authenticate(tc.token)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.role, p.Role)
		})
	}
}

func TestPrincipal(t *testing.T) {
	p := &auth.Principal{Role: auth.RoleViewer, Robots: []string{"r-1", "lab-*"}}
	require.True(t, p.CanRobot("r-1"))
	require.True(t, p.CanRobot("lab-7"))
	require.False(t, p.CanRobot("r-2"))
	require.False(t, p.AllRobots())
	require.False(t, p.CanCommand())
	require.True(t, auth.Anonymous().AllRobots())
	require.True(t, auth.Anonymous().CanCommand())
}

func TestAuthOff(t *testing.T) {
	a, err := auth.New(auth.Options{})
	require.NoError(t, err)
	require.False(t, a.Enabled())
	p, err := a.Authenticate("")
	require.NoError(t, err)
	require.Equal(t, auth.RoleAdmin, p.Role)
}

func TestMintRoundTrip(t *testing.T) {
	secret := []byte("mint-secret-0123456789")
	tok, err := auth.Mint(secret, auth.MintOptions{Role: auth.RoleOperator, Robots: []string{"r-*"}, TTL: time.Hour})
	require.NoError(t, err)
	a, err := auth.New(auth.Options{Secret: secret})
	require.NoError(t, err)
	p, err := a.Authenticate(tok)
	require.NoError(t, err)
	require.Equal(t, auth.RoleOperator, p.Role)
	require.Equal(t, []string{"r-*"}, p.Robots)
	require.WithinDuration(t, time.Now().Add(time.Hour), p.ExpiresAt, 2*time.Second)

	_, err = auth.Mint(nil, auth.MintOptions{Role: auth.RoleAdmin, Robots: []string{"*"}, TTL: time.Hour})
	require.ErrorIs(t, err, auth.ErrConfig)
	_, err = auth.Mint(secret, auth.MintOptions{Role: "boss", Robots: []string{"*"}, TTL: time.Hour})
	require.ErrorIs(t, err, auth.ErrBadClaims)
	_, err = auth.Mint(secret, auth.MintOptions{Role: auth.RoleAdmin, TTL: time.Hour})
	require.ErrorIs(t, err, auth.ErrBadClaims)
}

func TestFromRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/ws?token=q", nil)
	require.Equal(t, "q", auth.FromRequest(r))
	r.Header.Set("Authorization", "Bearer h")
	require.Equal(t, "h", auth.FromRequest(r), "the header wins")
}

func TestBadOptions(t *testing.T) {
	_, err := auth.New(auth.Options{PublicKeyPEM: []byte("nope")})
	require.ErrorIs(t, err, auth.ErrConfig)
	_, err = auth.New(auth.Options{StaticTokens: []auth.StaticToken{{Token: "t", Role: "king"}}})
	require.ErrorIs(t, err, auth.ErrConfig)
}
