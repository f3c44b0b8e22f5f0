package packages

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sandbox is a throwaway copy of this machine's root: an overlay of / whose
// writable layer is a tmpfs, mounted in a private mount namespace that a
// sleeping holder process keeps alive. dpkg installs into it exactly as into
// the real system (maintainer scripts, useradd, systemctl enable), but
// nothing reaches the host, and the whole thing vanishes with the holder,
// even if the test dies.
type sandbox struct {
	holder *exec.Cmd
	dir    string // tmpfs in the holder's namespace: upper/, work/, root/
}

// holderScript sets up the namespace; $1 is the sandbox's dir.
const holderScript = `set -e
d=$1
mount -t tmpfs -o mode=0755 tmpfs "$d"
mkdir "$d/upper" "$d/work" "$d/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root"
mount -t proc proc "$d/root/proc"
mount --bind /dev "$d/root/dev"
mount --rbind /sys "$d/root/sys"
mount -t tmpfs tmpfs "$d/root/run"
mount -t tmpfs tmpfs "$d/root/tmp"
echo ready
exec sleep 900
`

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	require.Zero(t, os.Geteuid(), "the package test installs with dpkg into an overlay of /: run it as root (make test in CI runs as root)")
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
	return s
}

// path is p inside the sandbox's root, as seen from the host.
func (s *sandbox) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s/root%s", s.holder.Process.Pid, s.dir, p)
}

// upper is the overlay's writable layer: everything the sandbox changed.
func (s *sandbox) upper() string {
	return fmt.Sprintf("/proc/%d/root%s/upper", s.holder.Process.Pid, s.dir)
}

// run runs argv chrooted into the sandbox with a clean environment.
func (s *sandbox) run(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	args := append([]string{"--target", fmt.Sprint(s.holder.Process.Pid), "--mount", "--",
		"chroot", s.dir + "/root", "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
		"DEBIAN_FRONTEND=noninteractive"}, argv...)
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

// must runs argv in the sandbox and fails the test on a non-zero exit.
func (s *sandbox) must(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := s.run(t, argv...)
	require.NoError(t, err, "%v:\n%s", argv, out)
	return out
}

// ids maps the sandbox's user or group names to ids from its /etc file.
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
		var id uint32
		if _, err := fmt.Sscan(f[2], &id); err == nil {
			m[id] = f[0]
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
	if os.IsNotExist(err) {
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
