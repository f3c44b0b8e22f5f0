package service_test

import (
	"testing"

	"github.com/robotfleet/fleetlink/agent/service"
	"github.com/robotfleet/fleetlink/configs/systemd"
	"github.com/stretchr/testify/require"
)

func TestUnitContents(t *testing.T) {
	u, err := service.Unit(service.Options{Executable: "/usr/local/bin/robot-agent", ConfigPath: "/etc/robot-agent/agent.yaml"})
	require.NoError(t, err)
	for _, want := range []string{
		"ExecStart=/usr/local/bin/robot-agent run --config /etc/robot-agent/agent.yaml\n",
		"ConditionFileIsExecutable=/usr/local/bin/robot-agent\n",
		"Restart=on-failure\n", "RestartSec=5\n",
		"After=network-online.target\n", "Wants=network-online.target\n",
		"StateDirectory=robot-agent\n", "WantedBy=multi-user.target\n",
		// The hardened unit, not kardianos' root one.
		"User=robot-agent\n", "ProtectSystem=strict\n", "NoNewPrivileges=yes\n", "CapabilityBoundingSet=\n",
	} {
		require.Contains(t, u, want)
	}
	require.NotContains(t, u, "RestartSec=120")
	require.NotContains(t, u, "/usr/bin/robot-agent run")
	u, err = service.Unit(service.Options{Executable: "/opt/robot agent/bin", ConfigPath: "/etc/x 1.yaml"})
	require.NoError(t, err)
	require.Contains(t, u, `ExecStart="/opt/robot agent/bin" run --config "/etc/x 1.yaml"`)
}

// The unit install writes for the packaged paths is the packaged unit:
// one source of truth.
func TestUnitIsThePackagedUnit(t *testing.T) {
	u, err := service.Unit(service.Options{Executable: "/usr/bin/robot-agent"})
	require.NoError(t, err)
	require.Equal(t, systemd.AgentUnit, u)
}

func TestControlRejectsUnknownAction(t *testing.T) {
	require.ErrorIs(t, service.Control(service.Options{}, "explode"), service.ErrUnknownAction)
}

// install refuses an executable the unit's ProtectHome=yes would hide
// (e.g. `go install` put it in ~/go/bin), before it creates anything.
func TestInstallRefusesAHiddenExecutable(t *testing.T) {
	err := service.Control(service.Options{Executable: "/home/dev/go/bin/robot-agent"}, "install")
	require.ErrorIs(t, err, service.ErrHiddenPath)
	err = service.Control(service.Options{Executable: "/usr/local/bin/robot-agent", ConfigPath: "/root/agent.yaml"}, "install")
	require.ErrorIs(t, err, service.ErrHiddenPath)
}
