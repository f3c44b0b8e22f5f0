package service_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/robotfleet/fleetlink/agent/service"
	"github.com/stretchr/testify/require"
)

// systemdAnalyze finds systemd-analyze, installing Debian's systemd package
// when running as root; it fails (never skips) when it cannot.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("systemd-analyze"); err == nil {
		return p
	}
	if os.Geteuid() == 0 {
		if out, err := exec.Command("sh", "-c", "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd").CombinedOutput(); err != nil {
			t.Fatalf("systemd-analyze missing and apt-get install systemd failed: %v\n%s", err, out)
		}
		if p, err := exec.LookPath("systemd-analyze"); err == nil {
			return p
		}
	}
	t.Fatal("systemd-analyze not found: run `make test-deps` (apt-get install systemd)")
	return ""
}

func TestUnitContents(t *testing.T) {
	u, err := service.Unit(service.Options{Executable: "/usr/local/bin/robot-agent", ConfigPath: "/etc/robot-agent/agent.yaml"})
	require.NoError(t, err)
	for _, want := range []string{
		"ExecStart=/usr/local/bin/robot-agent run --config /etc/robot-agent/agent.yaml\n",
		"Restart=on-failure\n", "RestartSec=5\n",
		"After=network-online.target\n", "Wants=network-online.target\n",
		"StateDirectory=robot-agent\n", "WantedBy=multi-user.target\n",
	} {
		require.Contains(t, u, want)
	}
	require.NotContains(t, u, "RestartSec=120")
	u, err = service.Unit(service.Options{Executable: "/opt/robot agent/bin", ConfigPath: "/etc/x 1.yaml"})
	require.NoError(t, err)
	require.Contains(t, u, `ExecStart="/opt/robot agent/bin" run --config "/etc/x 1.yaml"`)
}

// systemd-analyze verify accepts the unit; its ExecStart must exist, so the
// unit points at a copy of an executable in a temp dir.
func TestUnitVerifies(t *testing.T) {
	analyze := systemdAnalyze(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "robot-agent")
	copyFile(t, "/bin/true", exe)
	u, err := service.Unit(service.Options{Executable: exe})
	require.NoError(t, err)
	unitPath := filepath.Join(dir, "robot-agent.service")
	require.NoError(t, os.WriteFile(unitPath, []byte(u), 0o644))
	out, err := exec.Command(analyze, "verify", unitPath).CombinedOutput()
	// Lines about other units on this machine (no systemd running here) are not ours.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "robot-agent") {
			ours = append(ours, l)
		}
	}
	require.NoError(t, err, "systemd-analyze verify: %s", out)
	require.Empty(t, ours, "systemd-analyze verify complained: %s", out)
}

func TestControlRejectsUnknownAction(t *testing.T) {
	require.ErrorIs(t, service.Control(service.Options{}, "explode"), service.ErrUnknownAction)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}
