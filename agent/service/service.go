// Package service installs and controls robot-agent as a system service
// with kardianos/service, using our own systemd unit (kardianos' default
// hard-codes RestartSec=120): restart on failure after 5 s, start after the
// network is online, a StateDirectory for the spool and sessions.
package service

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"text/template"

	kservice "github.com/kardianos/service"
)

// Options describes the installed service.
type Options struct {
	// Name of the service and unit. Default "robot-agent".
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

// unitTemplate is the systemd unit. It is rendered here (not by kardianos'
// template engine) so `install --print-unit` prints exactly what install
// writes.
var unitTemplate = template.Must(template.New("unit").Parse(`[Unit]
Description=Robot fleet agent (fleetlink): metrics, alerts and model optimization sessions over MQTT
Documentation=https://github.com/robotfleet/fleetlink/blob/main/agent/README.md
Wants=network-online.target
After=network-online.target
ConditionFileIsExecutable={{.Exec}}

[Service]
Type=simple
ExecStart={{.Exec}} run --config {{.Config}}
# Restart after a crash or an error exit, not after a clean stop.
Restart=on-failure
RestartSec=5
# /var/lib/robot-agent: the durable spool, session journal and outputs.
StateDirectory=robot-agent
StateDirectoryMode=0750
# SIGTERM makes the agent publish its retained offline status, then exit.
KillSignal=SIGTERM
TimeoutStopSec=30
# Session runners live in their own process groups; stop them with the agent.
KillMode=mixed
# Secrets and overrides as ROBOT_AGENT_* variables, e.g. ROBOT_AGENT_MQTT_PASSWORD.
EnvironmentFile=-/etc/default/{{.Name}}

[Install]
WantedBy=multi-user.target
`))

// quote writes a path as one systemd command-line word.
func quote(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\$%;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`)
	return `"` + r.Replace(s) + `"`
}

// Unit returns the systemd unit for o.
func Unit(o Options) (string, error) {
	if err := o.fillDefaults(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	err := unitTemplate.Execute(&b, map[string]string{"Exec": quote(o.Executable), "Config": quote(o.ConfigPath), "Name": o.Name})
	return b.String(), err
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
	s, err := newService(o)
	if err != nil {
		return fmt.Errorf("service %s: %w", action, err)
	}
	if err := kservice.Control(s, action); err != nil {
		return fmt.Errorf("service %s: %w", action, err)
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
