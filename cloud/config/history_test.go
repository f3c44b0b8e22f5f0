package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
)

func TestHistoryAndRobotGaugesOptions(t *testing.T) {
	c, err := config.Load("", env(map[string]string{config.EnvRobotGauges: "true"}))
	require.NoError(t, err)
	require.True(t, c.Prometheus.RobotGauges, "FLEET_RELAY_ROBOT_GAUGES=true")
	require.False(t, config.Default().Prometheus.RobotGauges, "off by default")

	for _, tc := range []struct {
		edit func(*config.Config)
		want string
	}{
		{func(c *config.Config) { c.History.Window = 0 }, "history.window"},
		{func(c *config.Config) { c.History.Step = 500 * time.Millisecond }, "history.step"},
		{func(c *config.Config) { c.History.Step = time.Hour }, "history.step"},
		{func(c *config.Config) { c.History.RobotBytes = 100 }, "history.robot_bytes"},
		{func(c *config.Config) { c.History.TotalBytes = 5000 }, "history.total_bytes"},
	} {
		c := config.Default()
		tc.edit(&c)
		require.ErrorContains(t, c.Validate(), tc.want)
	}
}
