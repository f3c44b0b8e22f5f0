package packages

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testPipelines are added to the packaged agent.yaml, after the example
// fake-optimize pipeline the test merges in as the package's docs tell an
// operator to. python-probe starts Python and makes a ctypes callback
// (libffi closures, the usual casualty of MemoryDenyWriteExecute=yes);
// escape tries to write outside the state directory.
const testPipelines = `    - name: python-probe
      runner: exec
      command: [/usr/bin/python3, -c, "import ctypes, json, tempfile; f = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7); assert f() == 7; tempfile.TemporaryFile().close(); open('probe.txt', 'w').write('ok'); print(json.dumps({'progress': 1.0}))"]
      timeout: 1m
    - name: escape
      runner: exec
      command: [/bin/sh, -c, "touch /usr/local/escape"]
      timeout: 1m
`

// TestServicesRunHardened boots systemd as PID 1 in a sandbox, installs
// the packages, and runs robot-agent and fleet-relay under their hardened
// units as an operator would (`systemctl enable --now`): the built-in
// quantizer's child process, the example exec pipeline and a Python one
// complete; a pipeline that writes outside the state directory fails with
// EROFS; the processes run as their users with no capabilities, no new
// privileges and a seccomp filter; files get the unit's UMask. Then
// `robot-agent install` on a machine without the package writes the same
// unit and the example config, and the agent runs under it.
func TestServicesRunHardened(t *testing.T) {
	s := newSystemdSandbox(t)
	install(t, s, built.v1, "1")
	// Enabled, not started, until the operator has edited the config.
	for _, n := range names {
		require.Equal(t, "enabled\n", s.runOut(t, "systemctl", "is-enabled", n))
		require.Equal(t, "inactive\n", s.runOut(t, "systemctl", "is-active", n))
	}

	// The operator's steps: the example pipeline and its script from the
	// package's docs, a model, the robot id in /etc/default.
	s.must(t, "install", "-D", "-m", "0755", "/usr/share/doc/robot-agent/examples/pipelines/fake-optimizer.sh", "/opt/robot-agent/fake-optimizer.sh")
	conf := readFile(t, s.path("/etc/robot-agent/agent.yaml"))
	example := readFile(t, s.path("/usr/share/doc/robot-agent/examples/pipelines/fake-optimizer.yaml"))
	_, entries, ok := strings.Cut(example, "  pipelines:\n")
	require.True(t, ok)
	conf = strings.Replace(conf, "  pipelines:\n", "  pipelines:\n"+entries+testPipelines, 1)
	require.NoError(t, os.WriteFile(s.path("/etc/robot-agent/agent.yaml"), []byte(conf), 0o640))
	model, err := os.ReadFile(filepath.Join(built.models, "mlp_opset17.onnx"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.path("/var/lib/robot-agent/models/mlp.onnx"), model, 0o644))
	defaults := readFile(t, s.path("/etc/default/robot-agent")) + "ROBOT_AGENT_ROBOT_ID=r-sandbox\n"
	require.NoError(t, os.WriteFile(s.path("/etc/default/robot-agent"), []byte(defaults), 0o600))
	b, err := os.ReadFile(filepath.Join(built.bin, "amd64", "fleetctl"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.path("/usr/local/bin/fleetctl"), b, 0o755))

	s.must(t, "systemctl", "enable", "--now", "fleet-relay", "robot-agent")
	journal := func() string {
		return s.runOut(t, "journalctl", "--no-pager", "-u", "robot-agent", "-u", "fleet-relay")
	}
	require.Eventually(t, func() bool {
		_, err := s.run(t, "fleetctl", "ping", "--timeout", "5s", "r-sandbox")
		return err == nil
	}, 60*time.Second, 500*time.Millisecond, "the agent does not answer through the relay's broker:\n%s", journal)

	// The sandbox is applied.
	for _, n := range names {
		checkConfined(t, s, n)
	}

	// Sessions: completed, or failed for the escape.
	follow := func(pipeline string, params ...string) (map[string]any, error) {
		argv := []string{"fleetctl", "session", "start", "r-sandbox", "--pipeline", pipeline, "--model", "mlp.onnx",
			"--follow", "--follow-timeout", "2m", "--json"}
		for _, p := range params {
			argv = append(argv, "--param", p)
		}
		out, err := s.run(t, argv...)
		var res map[string]any
		i := strings.Index(out, "{") // progress lines go to stderr, before the JSON
		require.GreaterOrEqual(t, i, 0, "fleetctl %s:\n%s", pipeline, out)
		require.NoError(t, json.NewDecoder(strings.NewReader(out[i:])).Decode(&res), "fleetctl %s:\n%s", pipeline, out)
		return res, err
	}
	for _, tc := range []struct {
		pipeline string
		params   []string
	}{
		{"quantize-int8", nil},
		{"fake-optimize", []string{"steps=3", "step_delay=0"}},
		{"python-probe", nil},
	} {
		res, err := follow(tc.pipeline, tc.params...)
		require.NoError(t, err, "%s: %v\n%s", tc.pipeline, res, journal())
		require.Equal(t, "completed", res["status"], "%s: %v", tc.pipeline, res)
	}
	res, err := follow("escape")
	require.Error(t, err)
	require.Equal(t, "failed", res["status"])
	require.Contains(t, fmt.Sprint(res["state"]), "Read-only file system")
	_, err = os.Stat(s.path("/usr/local/escape"))
	require.True(t, os.IsNotExist(err), "the escape pipeline wrote /usr/local/escape")

	// The documented drop-in, as installed from the package's docs: the
	// agent restarts under it, with the video group and the real /dev, and
	// the quantizer still works.
	s.must(t, "install", "-D", "-m", "0644", "/usr/share/doc/robot-agent/examples/robot-agent.service.d/gpu-and-pipelines.conf",
		"/etc/systemd/system/robot-agent.service.d/gpu-and-pipelines.conf")
	s.must(t, "systemctl", "daemon-reload")
	s.must(t, "systemctl", "restart", "robot-agent")
	pid := waitRunning(t, s, "robot-agent")
	video := strings.Split(strings.TrimSpace(s.must(t, "getent", "group", "video")), ":")[2]
	require.Regexp(t, `(?m)^Groups:.*\b`+video+`\b`, s.must(t, "cat", "/proc/"+pid+"/status"))
	require.Contains(t, s.must(t, "systemd-analyze", "security", "--no-pager", "robot-agent"), "Overall exposure level for robot-agent.service: 1.7")
	res, err = follow("quantize-int8")
	require.NoError(t, err, "quantize-int8 under the drop-in: %v\n%s", res, journal())

	// What the agent and its runners write: UMask=0027, the service user.
	out := s.must(t, "find", "/var/lib/robot-agent/sessions", "-printf", "%m %u %g %p\n")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		require.Len(t, f, 4)
		require.Equal(t, "robot-agent", f[1], l)
		require.Equal(t, "robot-agent", f[2], l)
		require.Contains(t, []string{"750", "640", "600"}, f[0], l)
	}
	require.Contains(t, out, "probe.txt")

	// Removal stops the services, then `robot-agent install` without the
	// package writes the same unit, creates the user, and the agent runs
	// under it.
	s.must(t, "dpkg", "--purge", "robot-agent", "fleet-relay")
	for _, n := range names {
		require.NotEqual(t, "active\n", s.runOut(t, "systemctl", "is-active", n))
		require.Empty(t, s.runOut(t, "getent", "passwd", n))
	}
	agent, err := os.ReadFile(filepath.Join(built.bin, "amd64", "robot-agent"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.path("/usr/local/bin/robot-agent"), agent, 0o755))
	t.Log(s.must(t, "robot-agent", "install"))
	st, ok := s.stat(t, "/etc/robot-agent/agent.yaml")
	require.True(t, ok, "robot-agent install wrote no config")
	require.Equal(t, fileState{0o640, "root", "robot-agent"}, st)
	require.True(t, readFile(t, filepath.Join(built.root, "configs/agent.example.yaml")) == readFile(t, s.path("/etc/robot-agent/agent.yaml")))
	unit := readFile(t, s.path("/etc/systemd/system/robot-agent.service"))
	require.Equal(t, s.must(t, "robot-agent", "install", "--print-unit"), unit)
	require.Contains(t, unit, "ExecStart=/usr/local/bin/robot-agent run --config /etc/robot-agent/agent.yaml\n")
	s.must(t, "systemctl", "start", "robot-agent")
	require.Eventually(t, func() bool { return s.runOut(t, "systemctl", "is-active", "robot-agent") == "active\n" },
		30*time.Second, 200*time.Millisecond, "robot-agent install: not active:\n%s", journal)
	checkConfined(t, s, "robot-agent")
	s.must(t, "robot-agent", "stop")
	s.must(t, "robot-agent", "uninstall")
}

// checkConfined checks unit n's main process: its user, no capabilities,
// no new privileges, a seccomp filter.
func checkConfined(t *testing.T, s *sandbox, n string) {
	t.Helper()
	pid := waitRunning(t, s, n)
	status := s.must(t, "cat", "/proc/"+pid+"/status")
	// Running, not crash-looping.
	require.Equal(t, "0\n", s.must(t, "systemctl", "show", "-p", "NRestarts", "--value", n), "%s restarted:\n%s", n,
		s.runOut(t, "journalctl", "--no-pager", "-n", "20", "-u", n))
	uid := strings.Split(strings.TrimSpace(s.must(t, "getent", "passwd", n)), ":")[2]
	for _, want := range []string{
		"Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid + "\n",
		"CapEff:\t0000000000000000\n", "CapBnd:\t0000000000000000\n", "CapAmb:\t0000000000000000\n",
		"NoNewPrivs:\t1\n", "Seccomp:\t2\n",
	} {
		require.Contains(t, status, want, "%s (pid %s)", n, pid)
	}
}

// waitRunning waits until unit n's main process runs its binary and
// returns its pid.
func waitRunning(t *testing.T, s *sandbox, n string) string {
	t.Helper()
	// Until it execs the binary, the process is systemd's "(ot-agent)"
	// child still setting the sandbox up.
	var pid, status string
	running := func() bool {
		pid = strings.TrimSpace(s.must(t, "systemctl", "show", "-p", "MainPID", "--value", n))
		status = s.runOut(t, "cat", "/proc/"+pid+"/status")
		return pid != "0" && strings.HasPrefix(status, "Name:\t"+n+"\n")
	}
	if !assert.Eventually(t, running, 30*time.Second, 100*time.Millisecond) {
		t.Fatalf("%s is not running (pid %s):\n%s\n%s\n%s", n, pid, status, s.runOut(t, "systemctl", "status", "--no-pager", n),
			s.runOut(t, "journalctl", "--no-pager", "-n", "20", "-u", n))
	}
	return pid
}
