package systemd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/robotfleet/fleetlink/configs/systemd"
	"github.com/stretchr/testify/require"
)

// systemdAnalyze finds systemd-analyze (Debian's systemd package, installed
// by scripts/test-deps.sh); it fails, never skips, when it is missing.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	require.NoError(t, err, "systemd-analyze not found: run `make test-deps` (apt-get install systemd)")
	return p
}

// unitRoot writes the units into a throwaway root as the package installs
// them, with /bin/true standing in for the binaries (verify and security
// check that ExecStart exists), plus the agent's drop-in when dropIn.
func unitRoot(t *testing.T, dropIn bool) string {
	t.Helper()
	root := t.TempDir()
	trueBin, err := os.ReadFile("/bin/true")
	require.NoError(t, err)
	write := func(path, content string, mode os.FileMode) {
		p := filepath.Join(root, path)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), mode))
	}
	write("usr/bin/robot-agent", string(trueBin), 0o755)
	write("usr/bin/fleet-relay", string(trueBin), 0o755)
	write("etc/systemd/system/robot-agent.service", systemd.AgentUnit, 0o644)
	write("etc/systemd/system/fleet-relay.service", systemd.RelayUnit, 0o644)
	if dropIn {
		write("etc/systemd/system/robot-agent.service.d/gpu-and-pipelines.conf", systemd.AgentDropIn, 0o644)
	}
	return root
}

var exposureRe = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// exposure runs `systemd-analyze security --offline=yes --threshold=` on
// unit in root and returns the exposure and whether it is at most max
// (e.g. "2.5"; --threshold takes tenths: 25).
func exposure(t *testing.T, root, unit, max string) (string, bool) {
	t.Helper()
	tenths := strings.Replace(max, ".", "", 1)
	cmd := exec.Command(systemdAnalyze(t), "security", "--offline=yes", "--no-pager", "--root="+root, "--threshold="+tenths, unit)
	out, err := cmd.CombinedOutput()
	m := exposureRe.FindSubmatch(out)
	require.NotNil(t, m, "no exposure level in:\n%s", out)
	if err != nil {
		_, isExit := err.(*exec.ExitError)
		require.True(t, isExit, "systemd-analyze security: %v\n%s", err, out)
	}
	return string(m[1]), err == nil
}

// The targets: robot-agent at most 3.0, fleet-relay at most 2.5;
// the agent with the whole GPU/pipelines drop-in stays within 3.0 too.
func TestSecurityExposure(t *testing.T) {
	for _, tc := range []struct {
		name, unit, max string
		dropIn          bool
	}{
		{"robot-agent", "robot-agent.service", "3.0", false},
		{"fleet-relay", "fleet-relay.service", "2.5", false},
		{"robot-agent with drop-in", "robot-agent.service", "3.0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := exposure(t, unitRoot(t, tc.dropIn), tc.unit, tc.max)
			t.Logf("%s: exposure %s (threshold %s)", tc.name, got, tc.max)
			require.True(t, ok, "%s: exposure %s is over %s", tc.name, got, tc.max)
		})
	}
}

// --threshold really fails a unit over it: a bare root unit (what
// kardianos wrote before) rates 9.6.
func TestSecurityThresholdCatchesAnUnhardenedUnit(t *testing.T) {
	root := unitRoot(t, false)
	bare := "[Service]\nExecStart=/usr/bin/robot-agent run\n\n[Install]\nWantedBy=multi-user.target\n"
	require.NoError(t, os.WriteFile(filepath.Join(root, "etc/systemd/system/robot-agent.service"), []byte(bare), 0o644))
	got, ok := exposure(t, root, "robot-agent.service", "3.0")
	require.False(t, ok, "bare unit passed with exposure %s", got)
	require.Equal(t, "9.6", got)
}

// systemd-analyze verify accepts both units, by path (the throwaway root
// lacks the targets a --root verify needs; the package test verifies the
// installed units in a full root).
func TestUnitsVerify(t *testing.T) {
	root := unitRoot(t, false)
	for _, name := range []string{"robot-agent", "fleet-relay"} {
		unit := filepath.Join(root, "etc/systemd/system", name+".service")
		b, err := os.ReadFile(unit)
		require.NoError(t, err)
		// ExecStart must exist: point it at the root's stand-in binary.
		fixed := strings.ReplaceAll(string(b), "/usr/bin/"+name, filepath.Join(root, "usr/bin", name))
		require.NoError(t, os.WriteFile(unit, []byte(fixed), 0o644))
		out, err := exec.Command(systemdAnalyze(t), "verify", unit).CombinedOutput()
		require.NoError(t, err, "systemd-analyze verify %s: %s", name, out)
		// Lines about other units on this machine (no systemd running here) are not ours.
		for _, l := range strings.Split(string(out), "\n") {
			require.NotContains(t, l, name, "systemd-analyze verify complained: %s", out)
		}
	}
}
