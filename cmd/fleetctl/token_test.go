package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
)

func TestTokenCommand(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"token", "--secret", "sekrit-0123456789", "--role", "operator", "--robots", "r-*, lab-1", "--ttl", "2h"}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	a, err := auth.New(auth.Options{Secret: []byte("sekrit-0123456789")})
	require.NoError(t, err)
	p, err := a.Authenticate(strings.TrimSpace(out.String()))
	require.NoError(t, err)
	require.Equal(t, auth.RoleOperator, p.Role)
	require.Equal(t, []string{"r-*", "lab-1"}, p.Robots)
	require.WithinDuration(t, time.Now().Add(2*time.Hour), p.ExpiresAt, 5*time.Second)

	t.Setenv("FLEET_RELAY_AUTH_SECRET", "from-env-0123456789")
	out.Reset()
	require.Equal(t, 0, run([]string{"token", "--role", "viewer"}, &out, &errb))
	a, _ = auth.New(auth.Options{Secret: []byte("from-env-0123456789")})
	_, err = a.Authenticate(strings.TrimSpace(out.String()))
	require.NoError(t, err, "the secret comes from FLEET_RELAY_AUTH_SECRET")

	t.Setenv("FLEET_RELAY_AUTH_SECRET", "")
	errb.Reset()
	require.Equal(t, 2, run([]string{"token", "--role", "viewer"}, &out, &errb))
	require.Contains(t, errb.String(), "--secret")
	require.Equal(t, 2, run([]string{"token", "--secret", "s", "--role", "king"}, &out, &errb))
}
