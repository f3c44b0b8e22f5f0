package alerts_test

import (
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/alerts"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

func temp(c float64) *protocol.RobotMetrics {
	return &protocol.RobotMetrics{Temperatures: []protocol.Temperature{{Sensor: "cpu", Celsius: c}, {Sensor: "board", Celsius: 30}}}
}

func TestFiresOnceAndResolvesOnceWithHysteresis(t *testing.T) {
	e := alerts.New([]alerts.Rule{alerts.DefaultRules()[0]}) // cpu temp >= 85 for 30s, hysteresis 5
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at    time.Duration
		c     float64
		state string // "" = nothing emitted
	}{
		{0, 80, ""},
		{5 * time.Second, 86, ""},  // starts pending
		{20 * time.Second, 90, ""}, // 15 s held
		{25 * time.Second, 84, ""}, // drops below: pending reset
		{30 * time.Second, 85, ""}, // pending again
		{59 * time.Second, 88, ""}, // 29 s
		{60 * time.Second, 88, "firing"},
		{65 * time.Second, 95, ""}, // still firing: nothing new
		{70 * time.Second, 82, ""}, // inside hysteresis band
		{75 * time.Second, 79.9, "resolved"},
		{80 * time.Second, 70, ""},
	}
	for _, s := range steps {
		got := e.Evaluate(temp(s.c), t0.Add(s.at))
		if s.state == "" {
			require.Empty(t, got, "at %s", s.at)
			continue
		}
		require.Len(t, got, 1, "at %s", s.at)
		require.Equal(t, s.state, got[0].State)
		require.Equal(t, "cpu_temperature_high", got[0].Alert)
		require.Equal(t, 85.0, got[0].Threshold)
		require.Equal(t, s.c, got[0].Value)
		ev := protocol.NewEvent("r-1", got[0])
		require.NoError(t, ev.Validate())
	}
}

func TestValues(t *testing.T) {
	m := &protocol.RobotMetrics{
		CPU:    protocol.CPU{Percent: 12, Load1: 0.5},
		Memory: protocol.Memory{Total: 100, Percent: 91},
		Disks:  []protocol.Disk{{Mount: "/", Percent: 50}, {Mount: "/data", Percent: 95}},
		GPUs:   []protocol.GPU{{Index: 0, TempC: 60, UtilPercent: 10}, {Index: 1, TempC: 88, UtilPercent: 5}},
	}
	tests := []struct {
		metric string
		want   float64
		what   string
		ok     bool
	}{
		{alerts.MetricDiskPercent, 95, "/data", true},
		{alerts.MetricGPUTemperature, 88, "GPU 1", true},
		{alerts.MetricGPUUtilPercent, 10, "GPU 0", true},
		{alerts.MetricMemoryPercent, 91, "memory", true},
		{alerts.MetricSwapPercent, 0, "swap", false},
		{alerts.MetricCPUTemperature, 0, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.metric, func(t *testing.T) {
			v, what, ok := alerts.Value(tc.metric, m)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, v)
			require.Equal(t, tc.what, what)
		})
	}
}

func TestBelowRuleAndImmediateFire(t *testing.T) {
	r := alerts.Rule{Name: "mem_low", Metric: alerts.MetricMemoryPercent, Op: "<=", Threshold: 10, Hysteresis: 1}
	r.FillDefaults()
	require.NoError(t, r.Validate())
	e := alerts.New([]alerts.Rule{r})
	now := time.Now()
	m := &protocol.RobotMetrics{Memory: protocol.Memory{Total: 1, Percent: 5}}
	require.Len(t, e.Evaluate(m, now), 1)
	require.Equal(t, []string{"mem_low"}, e.Firing())
	m.Memory.Percent = 10.5
	require.Empty(t, e.Evaluate(m, now))
	m.Memory.Percent = 11.5
	got := e.Evaluate(m, now)
	require.Len(t, got, 1)
	require.Equal(t, "resolved", got[0].State)
}

func TestRuleValidate(t *testing.T) {
	tests := []struct {
		rule alerts.Rule
		want string
	}{
		{alerts.Rule{Metric: "cpu_percent"}, "name: is required"},
		{alerts.Rule{Name: "x", Metric: "bogus"}, `metric: unknown metric "bogus"`},
		{alerts.Rule{Name: "x", Metric: "cpu_percent", Op: ">"}, `op: must be ">=" or "<="`},
		{alerts.Rule{Name: "x", Metric: "cpu_percent", Severity: "fatal"}, `severity: must be info, warning or critical`},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			r := tc.rule
			if r.Op == "" && r.Name != "" && r.Metric != "bogus" && r.Severity == "" {
				r.FillDefaults()
			}
			if r.Severity == "" {
				r.Severity = "warning"
			}
			if r.Op == "" {
				r.Op = ">="
			}
			require.ErrorContains(t, r.Validate(), tc.want)
		})
	}
}
