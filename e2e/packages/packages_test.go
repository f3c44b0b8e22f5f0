// Package packages tests the robot-agent and fleet-relay packages the way an
// operator meets them: `make packages`' script builds the amd64 .deb (and
// .rpm) files, dpkg installs them into a throwaway copy of this machine (an
// overlay of / in a private mount namespace, see sandbox), and the test
// checks every file, owner and mode, the system users, the enabled units,
// `systemd-analyze verify` and `security` on the installed units, an upgrade
// that keeps an edited config, and a removal and purge that leave nothing
// behind.
package packages

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// built is what TestMain builds once for every test: the amd64 binaries
// (bin/amd64/{robot-agent,fleet-relay,fleetctl}), the 1.0.0 packages and
// sample ONNX models.
var built struct {
	root, bin, models string
	v1                map[string]string // "robot-agent.deb" -> path
}

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "fleetlink-packages")
	if err == nil {
		err = buildAll(tmp)
	}
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "packages:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(tmp)
	os.Exit(code)
}

func buildAll(tmp string) error {
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	built.root, built.bin, built.models = root, filepath.Join(tmp, "bin"), filepath.Join(tmp, "models")
	// Built the way scripts/packages.sh builds them, once for both
	// package versions.
	for _, n := range append(names, "fleetctl") {
		if err := command(root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"},
			"go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(built.bin, "amd64", n), "./cmd/"+n); err != nil {
			return err
		}
	}
	if err := command(root, nil, "go", "run", "./agent/onnxq/internal/testmodels/genmodels", "-big=false", built.models); err != nil {
		return err
	}
	built.v1, err = buildPackages(filepath.Join(tmp, "v1"), "1.0.0", "deb,rpm")
	return err
}

func command(dir string, env []string, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w\n%s", argv, err, b)
	}
	return nil
}

// buildPackages runs scripts/packages.sh for amd64 with the built binaries
// into out and returns the package files by name, e.g. "robot-agent.deb".
func buildPackages(out, version, formats string) (map[string]string, error) {
	if err := command(built.root, []string{"OUT=" + out, "ARCHES=amd64", "FORMATS=" + formats, "PKG_VERSION=" + version, "BIN_DIR=" + built.bin},
		"bash", "scripts/packages.sh"); err != nil {
		return nil, err
	}
	pkgs := map[string]string{}
	entries, err := os.ReadDir(out)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		for _, name := range names {
			if strings.HasPrefix(e.Name(), name) && !e.IsDir() {
				pkgs[name+filepath.Ext(e.Name())] = filepath.Join(out, e.Name())
			}
		}
	}
	return pkgs, nil
}

// install copies the packages into the sandbox and installs them with
// dpkg -i, returning dpkg's output.
func install(t *testing.T, s *sandbox, pkgs map[string]string, tag string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(s.path("/tmp/pkgs"), 0o755))
	argv := []string{"dpkg", "-i"}
	for _, n := range names {
		b, err := os.ReadFile(pkgs[n+".deb"])
		require.NoError(t, err, "no %s.deb built", n)
		p := "/tmp/pkgs/" + n + "-" + tag + ".deb"
		require.NoError(t, os.WriteFile(s.path(p), b, 0o644))
		argv = append(argv, p)
	}
	return s.must(t, argv...)
}

// want is one path a package installs.
type want struct {
	path  string
	state fileState
	src   string // repository file with the same contents; "" to skip
}

func file(path string, perm fs.FileMode, owner, group, src string) want {
	return want{path, fileState{perm, owner, group}, src}
}

func dir(path string, perm fs.FileMode, owner, group string) want {
	return want{path, fileState{fs.ModeDir | perm, owner, group}, ""}
}

// packaged is every file and explicit directory of each package.
var packaged = map[string][]want{
	"robot-agent": {
		file("/usr/bin/robot-agent", 0o755, "root", "root", ""),
		file("/usr/lib/systemd/system/robot-agent.service", 0o644, "root", "root", "configs/systemd/robot-agent.service"),
		dir("/etc/robot-agent", 0o750, "root", "robot-agent"),
		file("/etc/robot-agent/agent.yaml", 0o640, "root", "robot-agent", "configs/agent.example.yaml"),
		file("/etc/default/robot-agent", 0o600, "root", "root", "scripts/packaging/default/robot-agent"),
		file("/usr/share/doc/robot-agent/examples/robot-agent.service.d/gpu-and-pipelines.conf", 0o644, "root", "root", "configs/systemd/robot-agent.service.d/gpu-and-pipelines.conf"),
		file("/usr/share/doc/robot-agent/examples/pipelines/fake-optimizer.yaml", 0o644, "root", "root", "configs/pipelines/fake-optimizer.yaml"),
		file("/usr/share/doc/robot-agent/examples/pipelines/onnxruntime-quantize.yaml", 0o644, "root", "root", "configs/pipelines/onnxruntime-quantize.yaml"),
		file("/usr/share/doc/robot-agent/examples/pipelines/tensorrt-trtexec.yaml", 0o644, "root", "root", "configs/pipelines/tensorrt-trtexec.yaml"),
		file("/usr/share/doc/robot-agent/examples/pipelines/fake-optimizer.sh", 0o755, "root", "root", "scripts/examples/fake-optimizer.sh"),
		file("/usr/share/doc/robot-agent/examples/pipelines/ort-quantize-dynamic.py", 0o755, "root", "root", "scripts/examples/ort-quantize-dynamic.py"),
	},
	"fleet-relay": {
		file("/usr/bin/fleet-relay", 0o755, "root", "root", ""),
		file("/usr/lib/systemd/system/fleet-relay.service", 0o644, "root", "root", "configs/systemd/fleet-relay.service"),
		dir("/etc/fleet-relay", 0o750, "root", "fleet-relay"),
		file("/etc/fleet-relay/relay.yaml", 0o640, "root", "fleet-relay", "configs/relay.example.yaml"),
		file("/etc/default/fleet-relay", 0o600, "root", "root", "scripts/packaging/default/fleet-relay"),
	},
}

// created is what the maintainer scripts make on install (not in the
// package, so that remove keeps it and purge deletes it).
var created = map[string][]want{
	"robot-agent": {
		dir("/var/lib/robot-agent", 0o750, "robot-agent", "robot-agent"),
		dir("/var/lib/robot-agent/models", 0o750, "robot-agent", "robot-agent"),
	},
}

var conffiles = map[string][]string{
	"robot-agent": {"/etc/default/robot-agent", "/etc/robot-agent/agent.yaml"},
	"fleet-relay": {"/etc/default/fleet-relay", "/etc/fleet-relay/relay.yaml"},
}

var homes = map[string]string{"robot-agent": "/var/lib/robot-agent", "fleet-relay": "/nonexistent"}

var names = []string{"robot-agent", "fleet-relay"}

func TestDebInstallUpgradeRemove(t *testing.T) {
	v2, err := buildPackages(t.TempDir(), "1.0.1", "deb")
	require.NoError(t, err)
	t.Run("rpm", func(t *testing.T) { checkRPMs(t, built.v1) })

	// Install.
	s := newSandbox(t)
	out := install(t, s, built.v1, "1")
	t.Logf("dpkg -i:\n%s", out)
	require.Contains(t, out, "robot-agent: edit /etc/robot-agent/agent.yaml, then: systemctl enable --now robot-agent.service")
	for _, n := range names {
		require.Equal(t, "install ok installed 1.0.0-1", s.must(t, "dpkg-query", "-W", "-f=${Status} ${Version}", n))
		checkInstalled(t, s, n, "")
	}

	// The installed units verify and are within the hardening targets; the
	// installed binary's `install --print-unit` is the installed unit.
	for _, n := range names {
		out, err := s.run(t, "systemd-analyze", "verify", "/usr/lib/systemd/system/"+n+".service")
		require.NoError(t, err, "systemd-analyze verify %s:\n%s", n, out)
		require.NotContains(t, out, n, "systemd-analyze verify %s complained:\n%s", n, out)
	}
	for n, tenths := range map[string]string{"robot-agent": "30", "fleet-relay": "25"} {
		out := s.must(t, "systemd-analyze", "security", "--offline=yes", "--no-pager", "--threshold="+tenths, "/usr/lib/systemd/system/"+n+".service")
		t.Logf("%s: %s", n, regexp.MustCompile(`Overall exposure level.*`).FindString(out))
	}
	unit, err := os.ReadFile(s.path("/usr/lib/systemd/system/robot-agent.service"))
	require.NoError(t, err)
	require.Equal(t, string(unit), s.must(t, "robot-agent", "install", "--print-unit"))

	// The default configs are valid, and readable by the service users.
	s.must(t, "setpriv", "--reuid=robot-agent", "--regid=robot-agent", "--init-groups",
		"robot-agent", "config", "check", "--config", "/etc/robot-agent/agent.yaml")
	s.must(t, "setpriv", "--reuid=fleet-relay", "--regid=fleet-relay", "--init-groups",
		"fleet-relay", "config", "check", "--config", "/etc/fleet-relay/relay.yaml")

	// Upgrade to a rebuilt version: the edited config, the state and the
	// enabled unit stay; dpkg asks nothing and leaves no .dpkg-* files.
	edited := readFile(t, s.path("/etc/robot-agent/agent.yaml")) + "\n# local edit\nrobot_id: r-pkg-test\n"
	require.NoError(t, os.WriteFile(s.path("/etc/robot-agent/agent.yaml"), []byte(edited), 0o640))
	s.must(t, "sh", "-c", "echo spooled > /var/lib/robot-agent/keep && chown robot-agent: /var/lib/robot-agent/keep")
	out = install(t, s, v2, "2")
	t.Logf("dpkg -i (upgrade):\n%s", out)
	for _, n := range names {
		require.Equal(t, "install ok installed 1.0.1-1", s.must(t, "dpkg-query", "-W", "-f=${Status} ${Version}", n))
	}
	require.Equal(t, edited, readFile(t, s.path("/etc/robot-agent/agent.yaml")))
	require.Equal(t, "spooled\n", readFile(t, s.path("/var/lib/robot-agent/keep")))
	require.Contains(t, s.must(t, "robot-agent", "config", "check"), "robot_id: r-pkg-test")
	for _, n := range names {
		checkInstalled(t, s, n, "/etc/robot-agent/agent.yaml")
		leftovers, _ := filepath.Glob(s.path("/etc/" + n + "/*.dpkg-*"))
		require.Empty(t, leftovers)
	}

	// Remove: the package's files and the enablement go; the configs, the
	// state and the users stay.
	s.must(t, "dpkg", "--remove", "robot-agent", "fleet-relay")
	for _, n := range names {
		for _, w := range packaged[n] {
			_, exists := s.stat(t, w.path)
			isConf := contains(conffiles[n], w.path) || w.path == filepath.Dir(conffiles[n][1])
			require.Equal(t, isConf, exists, "%s after remove", w.path)
		}
		for _, w := range created[n] {
			_, exists := s.stat(t, w.path)
			require.True(t, exists, "%s after remove", w.path)
		}
		_, enabled := s.stat(t, "/etc/systemd/system/multi-user.target.wants/"+n+".service")
		require.False(t, enabled, "%s still enabled after remove", n)
		require.Contains(t, s.ids(t, "/etc/passwd"), lookup(t, s, n))
	}

	// Purge: nothing is left but dpkg's own records and logs, and the
	// system's user and group files are as before.
	s.must(t, "dpkg", "--purge", "robot-agent", "fleet-relay")
	var left []string
	for _, c := range s.changes(t) {
		if !strings.HasPrefix(c, "/var/lib/dpkg/") && !strings.HasPrefix(c, "/var/log/") && !isAccountFile(c) {
			left = append(left, c)
		}
	}
	require.Empty(t, left, "left behind after purge")
	for _, f := range []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"} {
		require.Equal(t, readFile(t, f), readFile(t, s.path(f)), "%s changed by install+purge", f)
	}
}

// checkInstalled checks every path of package n: type, mode, owner, group
// and contents (but for the edited file); the system user; the conffiles;
// that the unit is enabled.
func checkInstalled(t *testing.T, s *sandbox, n, edited string) {
	t.Helper()
	for _, w := range append(append([]want{}, packaged[n]...), created[n]...) {
		got, ok := s.stat(t, w.path)
		require.True(t, ok, "%s is missing", w.path)
		require.Equal(t, w.state, got, "%s", w.path)
		if w.src != "" && w.path != edited {
			require.True(t, readFile(t, filepath.Join(built.root, w.src)) == readFile(t, s.path(w.path)), "%s differs from %s", w.path, w.src)
		}
	}
	// dpkg lists exactly these files (directories aside).
	var listed []string
	for _, p := range strings.Fields(s.must(t, "dpkg", "-L", n)) {
		if fi, err := os.Lstat(s.path(p)); err == nil && !fi.IsDir() {
			listed = append(listed, p)
		}
	}
	var files []string
	for _, w := range packaged[n] {
		if !w.state.mode.IsDir() {
			files = append(files, w.path)
		}
	}
	sort.Strings(listed)
	sort.Strings(files)
	require.Equal(t, files, listed, "dpkg -L %s", n)
	// The binary runs.
	require.Contains(t, s.must(t, n, "--version"), n+" ")

	// A system user with no login and the package's home, its own group.
	pw := strings.Split(strings.TrimSpace(s.must(t, "getent", "passwd", n)), ":")
	require.Len(t, pw, 7)
	uid, gid := atoi(t, pw[2]), atoi(t, pw[3])
	require.Less(t, uid, 1000, "%s is not a system user", n)
	require.Equal(t, homes[n], pw[5])
	require.Equal(t, "/usr/sbin/nologin", pw[6])
	require.Equal(t, n, s.ids(t, "/etc/group")[uint32(gid)])
	_, err := os.Stat(s.path("/nonexistent"))
	require.True(t, os.IsNotExist(err), "useradd created /nonexistent")

	var conf []string
	for _, l := range strings.Split(strings.TrimSpace(s.must(t, "dpkg-query", "-W", "-f=${Conffiles}", n)), "\n") {
		conf = append(conf, strings.Fields(l)[0])
	}
	sort.Strings(conf)
	require.Equal(t, conffiles[n], conf, "conffiles of %s", n)

	// Enabled (postinst), pointing at the packaged unit.
	link, err := os.Readlink(s.path("/etc/systemd/system/multi-user.target.wants/" + n + ".service"))
	require.NoError(t, err, "%s is not enabled", n)
	require.Contains(t, []string{"/usr/lib/systemd/system/" + n + ".service", "/lib/systemd/system/" + n + ".service"}, link)
}

// checkRPMs reads the .rpm files with Debian's rpm: every file with its
// mode, owner, group and config flags; the scripts; the dependency on
// useradd's package; the architecture.
func checkRPMs(t *testing.T, pkgs map[string]string) {
	rpm, err := exec.LookPath("rpm")
	require.NoError(t, err, "rpm not found: run `make test-deps` (apt-get install rpm)")
	for _, n := range names {
		p := pkgs[n+".rpm"]
		require.NotEmpty(t, p, "no %s.rpm built", n)
		q := func(args ...string) string {
			out, err := exec.Command(rpm, append([]string{"-qp", "--nosignature"}, append(args, p)...)...).CombinedOutput()
			require.NoError(t, err, "rpm %v:\n%s", args, out)
			return string(out)
		}
		require.Equal(t, n+" 1.0.0 1 x86_64", q("--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}"))
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(q("--qf", "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}. %{FILENAMES}\n]")), "\n") {
			f := strings.Fields(l)
			got[f[4]] = strings.Join(f[:4], " ")
		}
		wantFiles := map[string]string{}
		for _, w := range packaged[n] {
			flags := "."
			if contains(conffiles[n], w.path) {
				flags = "cn."
			}
			wantFiles[w.path] = w.state.mode.String() + " " + w.state.owner + " " + w.state.group + " " + flags
		}
		require.Equal(t, wantFiles, got, "rpm -qp %s: files", n)
		scripts := q("--scripts")
		for _, s := range []string{"preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "useradd --system"} {
			require.Contains(t, scripts, s)
		}
		require.Contains(t, q("--requires"), "shadow-utils")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func isAccountFile(p string) bool {
	switch strings.TrimSuffix(p, "-") {
	case "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/.pwd.lock", "/etc/subuid", "/etc/subgid":
		return true
	}
	return false
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// lookup returns n's uid in the sandbox.
func lookup(t *testing.T, s *sandbox, n string) uint32 {
	t.Helper()
	pw := strings.Split(strings.TrimSpace(s.must(t, "getent", "passwd", n)), ":")
	require.Len(t, pw, 7)
	return uint32(atoi(t, pw[2]))
}
