package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/internal/brokertest"
)

func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"--version"}, &out, &errb))
	require.Contains(t, out.String(), "fleet-relay")
	out.Reset()
	require.Equal(t, 0, run([]string{"config", "example"}, &out, &errb))
	require.Equal(t, string(config.Example), out.String())
	require.Equal(t, 0, run([]string{"--help"}, &out, &errb))
	require.Contains(t, errb.String(), "FLEET_RELAY_AUTH_SECRET")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("ws:\n  heartbeat: 0s\n"), 0o600))
	errb.Reset()
	require.Equal(t, 1, run([]string{"config", "check", "--config", bad}, &out, &errb))
	require.Contains(t, errb.String(), "ws.heartbeat")
}

// TestRefusesInsecure: auth off on a non-loopback address is refused with
// the reason, unless --insecure-no-auth.
func TestRefusesInsecure(t *testing.T) {
	t.Setenv(config.EnvAuthSecret, "")
	var out, errb bytes.Buffer
	require.Equal(t, 1, run([]string{"--listen", "0.0.0.0:0"}, &out, &errb))
	require.Contains(t, errb.String(), "--insecure-no-auth")
}

// TestBinary runs the built binary as a service unit would: env config,
// SIGTERM stops it cleanly.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fleet-relay")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	port, mport := brokertest.FreePort(t), brokertest.FreePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"FLEET_RELAY_LISTEN=127.0.0.1:"+itoa(port),
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=127.0.0.1:"+itoa(mport),
		"FLEET_RELAY_MQTT_BROKER=", "FLEET_RELAY_AUTH_SECRET=", "FLEET_RELAY_TOPIC_PREFIX=acme")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	brokertest.WaitPort(t, "127.0.0.1:"+itoa(mport), 10*time.Second)
	brokertest.WaitPort(t, "127.0.0.1:"+itoa(port), 10*time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "%s", logs.String())
	require.True(t, strings.Contains(logs.String(), "acme/v1/robots/#"), "%s", logs.String())
}

func itoa(i int) string { return strconv.Itoa(i) }
