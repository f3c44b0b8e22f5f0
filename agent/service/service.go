// Package service installs and controls robot-agent as a system service
// with kardianos/service. The unit is not kardianos' (which runs as root
// and hard-codes RestartSec=120) but the hardened one the package installs,
// configs/systemd/robot-agent.service: the robot-agent system user, a
// read-only OS, the state directory as the only writable place. install
// also creates that user and, when missing, the config file (the example,
// 0640 root:robot-agent), as the package does.
package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	kservice "github.com/kardianos/service"

	"github.com/robotfleet/fleetlink/agent/config"
	"github.com/robotfleet/fleetlink/configs/systemd"
)

// User is the system user the unit runs as (User= in the unit); install
// creates it when it is missing, as the package's preinstall script does.
const User = "robot-agent"

// Options describes the installed service.
type Options struct {
	// Name of the service and unit. Default "robot-agent". The unit's
	// contents (user, state directory) do not depend on it.
	Name string
	// Executable the unit runs. Default: this program (os.Executable).
	Executable string
	// ConfigPath passed as `run --config`. Default /etc/robot-agent/agent.yaml.
	ConfigPath string
}

func (o *Options) fillDefaults() error {
	if o.Name == "" {
		o.Name = "robot-agent"
	}
	if o.ConfigPath == "" {
		o.ConfigPath = "/etc/robot-agent/agent.yaml"
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("service: find executable: %w", err)
		}
		o.Executable = exe
	}
	return nil
}

// Unit returns the systemd unit for o: configs/systemd/robot-agent.service,
// the unit the package installs, with ExecStart (and the condition on it)
// pointing at o.Executable and o.ConfigPath. With /usr/bin/robot-agent and
// the default config path it is that file byte for byte. `install
// --print-unit` prints exactly what install writes.
func Unit(o Options) (string, error) {
	if err := o.fillDefaults(); err != nil {
		return "", err
	}
	var b strings.Builder
	for _, line := range strings.SplitAfter(systemd.AgentUnit, "\n") {
		switch {
		case strings.HasPrefix(line, "ExecStart="):
			line = "ExecStart=" + quote(o.Executable) + " run --config " + quote(o.ConfigPath) + "\n"
		case strings.HasPrefix(line, "ConditionFileIsExecutable="):
			line = "ConditionFileIsExecutable=" + quote(o.Executable) + "\n"
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// quote writes a path as one systemd command-line word.
func quote(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\$%;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`
}

// noop satisfies kardianos' Interface for control actions; `run` does not
// go through kardianos (systemd runs the foreground process directly).
type noop struct{}

func (noop) Start(kservice.Service) error { return nil }
func (noop) Stop(kservice.Service) error  { return nil }

func newService(o Options) (kservice.Service, error) {
	if err := o.fillDefaults(); err != nil {
		return nil, err
	}
	unit, err := Unit(o)
	if err != nil {
		return nil, err
	}
	return kservice.New(noop{}, &kservice.Config{
		Name:        o.Name,
		DisplayName: "Robot fleet agent",
		Description: "fleetlink robot agent",
		Executable:  o.Executable,
		Arguments:   []string{"run", "--config", o.ConfigPath},
		Option:      kservice.KeyValue{"SystemdScript": unit},
	})
}

// Control runs install, uninstall, start, stop or restart.
func Control(o Options, action string) error {
	switch action {
	case "install", "uninstall", "start", "stop", "restart":
	default:
		return fmt.Errorf("service %s: %w", action, ErrUnknownAction)
	}
	if err := o.fillDefaults(); err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	s, err := newService(o)
	if err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	if action == "install" {
		for _, p := range []string{o.Executable, o.ConfigPath} {
			if hidden(p) {
				return fmt.Errorf("service install: %s: %w; copy it to /usr/local/bin or /etc/robot-agent first", p, ErrHiddenPath)
			}
		}
		if err := ensureUser(User, "/var/lib/robot-agent"); err != nil {
			return fmt.Errorf("service install: %w", err)
		}
		if err := ensureConfig(o.ConfigPath, User); err != nil {
			return fmt.Errorf("service install: %w", err)
		}
	}
	if err := kservice.Control(s, action); err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	return nil
}

// hidden reports whether path is under a directory ProtectHome=yes hides.
func hidden(path string) bool {
	for _, d := range []string{"/home/", "/root/", "/run/user/"} {
		if strings.HasPrefix(path, d) {
			return true
		}
	}
	return false
}

// ensureUser creates the system user name (and its group) unless it
// exists: no login shell, home = the state directory, not created here
// (systemd's StateDirectory= creates and owns it).
func ensureUser(name, home string) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	nologin := "/usr/sbin/nologin"
	if _, err := os.Stat(nologin); err != nil {
		nologin = "/sbin/nologin"
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--home-dir", home, "--no-create-home",
		"--shell", nologin, "--comment", "fleetlink robot agent", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("create system user %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ensureConfig writes the commented example config to path unless a file
// is there (the unit's `run --config` needs one), readable by group only,
// as the package installs it: root:<group> 0640 in a 0750 directory.
func ensureConfig(path, group string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return err
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("group %s: gid %q: %w", group, g.Gid, err)
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.Chown(dir, 0, gid); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}
	if err := os.WriteFile(path, config.Example(), 0o640); err != nil {
		return fmt.Errorf("write the example config: %w", err)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		return fmt.Errorf("write the example config: %w", err)
	}
	return nil
}

// Status returns running, stopped or unknown, and the init system used.
func Status(o Options) (string, error) {
	s, err := newService(o)
	if err != nil {
		return "", fmt.Errorf("service status: %w", err)
	}
	st, err := s.Status()
	name := map[kservice.Status]string{kservice.StatusRunning: "running", kservice.StatusStopped: "stopped"}[st]
	if name == "" {
		name = "unknown"
	}
	if err != nil {
		return name, fmt.Errorf("service status (%s): %w", s.Platform(), err)
	}
	return name + " (" + s.Platform() + ")", nil
}
