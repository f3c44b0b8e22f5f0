package packages

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sandbox is a throwaway copy of this machine's root: an overlay of / whose
// writable layer is a tmpfs, in private namespaces that die with their
// processes. dpkg installs into it exactly as into the real system
// (maintainer scripts, useradd, systemctl), but nothing reaches the host,
// and the whole thing vanishes with its processes, even if the test dies.
//
// newSandbox keeps it alive with a sleeping holder process and enters it
// with chroot: no init, as in an image build. newSystemdSandbox boots
// systemd as PID 1 in it (own mount, PID, network, cgroup, UTS and IPC
// namespaces; pivot_root, since systemd cannot create the user namespace
// of PrivateUsers= inside a chroot), so units run with their real sandbox.
type sandbox struct {
	holder *exec.Cmd
	pid    int           // a process whose root directory leads to the sandbox
	prefix string        // the sandbox's root below pid's root ("" after pivot_root)
	enter  []string      // nsenter arguments that put a command inside
	dir    string        // the tmpfs with upper/, work/, root/ (in pid's mount namespace)
	log    *lockedBuffer // the booted sandbox's console
}

// lockedBuffer is a bytes.Buffer safe for the two writers of a command.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// overlayScript mounts the sandbox's root at $d/root; $d is its tmpfs.
const overlayScript = `set -e
mount -t tmpfs -o mode=0755 tmpfs "$d"
mkdir "$d/upper" "$d/work" "$d/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root"
r=$d/root
mount -t proc proc "$r/proc"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
`

// holderScript: the chroot sandbox, kept by a sleep.
const holderScript = `d=$1
` + overlayScript + `mount --bind /dev "$r/dev"
mount --rbind /sys "$r/sys"
echo ready
exec sleep 900
`

// systemdScript: the booted sandbox. $2 is a fresh cgroup2 directory that
// becomes the cgroup namespace's root, so every cgroup systemd makes stays
// below it. A minimal /dev (not the host's ttys), read-only sysfs, systemd
// in unified cgroup mode, booted to basic.target only: the host's enabled
// services (brokers, databases) do not start.
const systemdScript = `set -e
d=$1
mkdir "$2"
echo $$ > "$2/cgroup.procs"
exec unshare --mount --propagation private --pid --fork --net --cgroup --uts --ipc sh -c '
d=$1
` + overlayScript + `mount -t sysfs -o ro sysfs "$r/sys"
mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid tmpfs "$r/dev"
for n in null zero full random urandom tty; do touch "$r/dev/$n"; mount --bind "/dev/$n" "$r/dev/$n"; done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
hostname fleetlink-sandbox
mkdir "$r/run/oldroot"
cd "$r"
pivot_root . run/oldroot
umount -l /run/oldroot
rmdir /run/oldroot
exec /usr/bin/env -i container=fleetlink-test /lib/systemd/systemd systemd.unified_cgroup_hierarchy=1 systemd.unit=basic.target
' sh "$d"
`

func requireRoot(t *testing.T) {
	t.Helper()
	require.Zero(t, os.Geteuid(), "the package tests install with dpkg into an overlay of / in private namespaces: run them as root (CI's make test does)")
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	requireRoot(t)
	s := &sandbox{dir: t.TempDir()}
	s.holder = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", holderScript, "sh", s.dir)
	s.holder.Stderr = os.Stderr
	out, err := s.holder.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, s.holder.Start(), "unshare")
	t.Cleanup(func() {
		_ = s.holder.Process.Kill()
		_ = s.holder.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "sandbox setup failed (needs overlayfs and mount namespaces)")
	require.Equal(t, "ready\n", line)
	s.pid = s.holder.Process.Pid
	s.prefix = s.dir + "/root"
	s.enter = []string{"--target", strconv.Itoa(s.pid), "--mount", "--", "chroot", s.prefix}
	return s
}

// cgroup2Dir returns a new cgroup2 directory's path below this process's
// own cgroup, for the booted sandbox; it fails when there is no cgroup2.
func cgroup2Dir(t *testing.T) string {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	var mnt string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 8 && f[len(f)-3] == "cgroup2" {
			mnt = f[4]
			break
		}
	}
	require.NotEmpty(t, mnt, "no cgroup2 file system mounted: systemd cannot boot in the sandbox")
	self, err := os.ReadFile("/proc/self/cgroup")
	require.NoError(t, err)
	var own string
	for _, l := range strings.Split(string(self), "\n") {
		if strings.HasPrefix(l, "0::") {
			own = strings.TrimPrefix(l, "0::")
		}
	}
	return filepath.Join(mnt, own, fmt.Sprintf("fleetlink-sandbox-%d-%d", os.Getpid(), time.Now().UnixNano()))
}

func newSystemdSandbox(t *testing.T) *sandbox {
	t.Helper()
	requireRoot(t)
	s := &sandbox{dir: t.TempDir(), log: &lockedBuffer{}}
	cg := cgroup2Dir(t)
	s.holder = exec.Command("sh", "-c", systemdScript, "sh", s.dir, cg)
	s.holder.Stdout, s.holder.Stderr = s.log, s.log
	require.NoError(t, s.holder.Start())
	t.Cleanup(func() { s.shutdown(t, cg) })

	// PID 1 of the new PID namespace is unshare's child.
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.holder.Process.Pid, s.holder.Process.Pid))
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return false
		}
		s.pid, _ = strconv.Atoi(f[0])
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.pid))
		return strings.HasSuffix(exe, "/systemd")
	}, 30*time.Second, 50*time.Millisecond, "systemd did not start in the sandbox:\n%s", s.log)
	s.enter = []string{"--target", strconv.Itoa(s.pid), "--all", "--root", "--wd", "--"}
	// Early in the boot systemctl cannot tell a booting systemd from none:
	// it says "offline" until PID 1 has made /run/systemd/system (sd_booted),
	// then "Failed to connect to bus" until PID 1 listens on its private
	// socket. On a loaded machine a first poll can land in either window.
	var out string
	if !assert.Eventually(t, func() bool {
		out = s.runOut(t, "systemctl", "is-system-running", "--wait")
		return out != "offline\n" && !strings.Contains(out, "Failed to connect to bus")
	}, 60*time.Second, 100*time.Millisecond, "systemctl cannot reach systemd in the sandbox") {
		t.Fatalf("systemctl's last answer: %q; sandbox setup output:\n%s", out, s.log)
	}
	require.Equal(t, "running\n", out, "systemd in the sandbox; failed units:\n%s", s.runOut(t, "systemctl", "--failed", "--no-pager"))
	return s
}

// shutdown powers the booted sandbox off (SIGKILL to its PID 1 when that
// takes too long: the kernel then ends every process in the namespace) and
// removes its cgroups.
func (s *sandbox) shutdown(t *testing.T, cg string) {
	if s.pid != 0 {
		_, _ = s.run(t, "systemctl", "poweroff", "--no-block")
	}
	done := make(chan struct{})
	go func() { _ = s.holder.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		if s.pid != 0 {
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
		}
		_ = s.holder.Process.Kill()
		<-done
	}
	// Empty cgroups go with rmdir, deepest first; their last processes
	// may take a moment to be gone.
	require.Eventually(t, func() bool {
		var dirs []string
		_ = filepath.WalkDir(cg, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
		_, err := os.Stat(cg)
		return errors.Is(err, fs.ErrNotExist)
	}, 20*time.Second, 100*time.Millisecond, "cgroup %s not removed", cg)
}

// path is p inside the sandbox, as seen from the host.
func (s *sandbox) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s%s", s.pid, s.prefix, p)
}

// upper is the overlay's writable layer: everything the sandbox changed
// (the chroot sandbox only).
func (s *sandbox) upper() string {
	return fmt.Sprintf("/proc/%d/root%s/upper", s.pid, s.dir)
}

// run runs argv inside the sandbox with a clean environment.
func (s *sandbox) run(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	args := append(append([]string{}, s.enter...), append([]string{"/usr/bin/env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, argv...)...)
	cmd := exec.Command("nsenter", args...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	done := make(chan error, 1)
	require.NoError(t, cmd.Start())
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return b.String(), err
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v: no end after 3 minutes\n%s", argv, b.String())
		return "", nil
	}
}

// runOut is run's output, whatever the exit status.
func (s *sandbox) runOut(t *testing.T, argv ...string) string {
	t.Helper()
	out, _ := s.run(t, argv...)
	return out
}

// must runs argv in the sandbox and fails the test on a non-zero exit.
func (s *sandbox) must(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := s.run(t, argv...)
	require.NoError(t, err, "%v:\n%s", argv, out)
	return out
}

// ids maps the sandbox's user or group ids to names from its /etc file.
func (s *sandbox) ids(t *testing.T, file string) map[uint32]string {
	t.Helper()
	b, err := os.ReadFile(s.path(file))
	require.NoError(t, err)
	m := map[uint32]string{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) < 3 {
			continue
		}
		if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			m[uint32(id)] = f[0]
		}
	}
	return m
}

// fileState is what the test checks of an installed path.
type fileState struct {
	mode         fs.FileMode // type and permission bits
	owner, group string
}

func (s *sandbox) stat(t *testing.T, p string) (fileState, bool) {
	t.Helper()
	fi, err := os.Lstat(s.path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{}, false
	}
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return fileState{
		mode:  fi.Mode() & (fs.ModeType | fs.ModePerm),
		owner: s.ids(t, "/etc/passwd")[st.Uid],
		group: s.ids(t, "/etc/group")[st.Gid],
	}, true
}

// changes lists what the sandbox's writable layer holds besides
// directories, as paths of the sandbox; a whiteout (a host file deleted)
// is marked "(deleted)".
func (s *sandbox) changes(t *testing.T) []string {
	t.Helper()
	var r []string
	up := s.upper()
	require.NoError(t, filepath.WalkDir(up, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, up)
		if d.Type()&fs.ModeCharDevice != 0 {
			rel += " (deleted)"
		}
		r = append(r, rel)
		return nil
	}))
	return r
}
