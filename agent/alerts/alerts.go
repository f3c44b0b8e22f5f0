// Package alerts turns robot.metrics samples into robot.alert events: each
// configured rule (metric, threshold, for-duration, severity, hysteresis)
// fires once when its condition has held for the duration, and resolves once
// when the value is back past the threshold by the hysteresis.
package alerts

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Metrics a rule may watch.
const (
	MetricCPUTemperature = "cpu_temperature" // hottest temperature sensor, °C
	MetricGPUTemperature = "gpu_temperature" // hottest GPU, °C
	MetricMemoryPercent  = "memory_percent"
	MetricSwapPercent    = "swap_percent"
	MetricDiskPercent    = "disk_percent" // fullest disk
	MetricCPUPercent     = "cpu_percent"
	MetricLoad1          = "load1"
	MetricGPUUtilPercent = "gpu_util_percent" // busiest GPU
)

var metrics = []string{MetricCPUTemperature, MetricGPUTemperature, MetricMemoryPercent, MetricSwapPercent,
	MetricDiskPercent, MetricCPUPercent, MetricLoad1, MetricGPUUtilPercent}

// Rule is one alert rule of the config's alerts.rules.
type Rule struct {
	// Name is the alert's name on the wire, e.g. cpu_temperature_high.
	Name string `yaml:"name"`
	// Metric is one of cpu_temperature, gpu_temperature, memory_percent,
	// swap_percent, disk_percent, cpu_percent, load1, gpu_util_percent.
	Metric string `yaml:"metric"`
	// Op is ">=" (fire at or above) or "<=" (fire at or below). Default ">=".
	Op string `yaml:"op"`
	// Threshold the value is compared with.
	Threshold float64 `yaml:"threshold"`
	// For is how long the condition must hold before the alert fires. Default 0 (at once).
	For time.Duration `yaml:"for"`
	// Severity is info, warning or critical. Default warning.
	Severity string `yaml:"severity"`
	// Hysteresis: a firing alert resolves only once the value is this far
	// back past the threshold. Default 0.
	Hysteresis float64 `yaml:"hysteresis"`
}

// DefaultRules are the rules used when the config names none.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "cpu_temperature_high", Metric: MetricCPUTemperature, Op: ">=", Threshold: 85, For: 30 * time.Second, Severity: "warning", Hysteresis: 5},
		{Name: "memory_high", Metric: MetricMemoryPercent, Op: ">=", Threshold: 90, For: 60 * time.Second, Severity: "warning", Hysteresis: 5},
		{Name: "disk_full", Metric: MetricDiskPercent, Op: ">=", Threshold: 90, For: 0, Severity: "warning", Hysteresis: 2},
		{Name: "gpu_temperature_high", Metric: MetricGPUTemperature, Op: ">=", Threshold: 85, For: 30 * time.Second, Severity: "warning", Hysteresis: 5},
	}
}

// FillDefaults sets Op and Severity when empty.
func (r *Rule) FillDefaults() {
	if r.Op == "" {
		r.Op = ">="
	}
	if r.Severity == "" {
		r.Severity = "warning"
	}
}

// Validate returns an error that starts with the field name ("name: ...").
func (r *Rule) Validate() error {
	switch {
	case r.Name == "":
		return errors.New("name: is required")
	case !slices.Contains(metrics, r.Metric):
		return fmt.Errorf("metric: unknown metric %q (want one of %v)", r.Metric, metrics)
	case r.Op != ">=" && r.Op != "<=":
		return fmt.Errorf("op: must be \">=\" or \"<=\", got %q", r.Op)
	case r.For < 0:
		return fmt.Errorf("for: must not be negative, got %s", r.For)
	case r.Severity != "info" && r.Severity != "warning" && r.Severity != "critical":
		return fmt.Errorf("severity: must be info, warning or critical, got %q", r.Severity)
	case r.Hysteresis < 0:
		return fmt.Errorf("hysteresis: must not be negative, got %v", r.Hysteresis)
	}
	return nil
}

// Value extracts a rule's metric from a sample. ok is false when the
// sample has no such value (no sensors, no GPU, no disks).
func Value(metric string, m *protocol.RobotMetrics) (v float64, what string, ok bool) {
	switch metric {
	case MetricCPUTemperature:
		for _, t := range m.Temperatures {
			if !ok || t.Celsius > v {
				v, what, ok = t.Celsius, t.Sensor, true
			}
		}
	case MetricGPUTemperature:
		for _, g := range m.GPUs {
			if !ok || g.TempC > v {
				v, what, ok = g.TempC, fmt.Sprintf("GPU %d", g.Index), true
			}
		}
	case MetricGPUUtilPercent:
		for _, g := range m.GPUs {
			if !ok || g.UtilPercent > v {
				v, what, ok = g.UtilPercent, fmt.Sprintf("GPU %d", g.Index), true
			}
		}
	case MetricDiskPercent:
		for _, d := range m.Disks {
			if !ok || d.Percent > v {
				v, what, ok = d.Percent, d.Mount, true
			}
		}
	case MetricMemoryPercent:
		return m.Memory.Percent, "memory", m.Memory.Total > 0
	case MetricSwapPercent:
		return m.Swap.Percent, "swap", m.Swap.Total > 0
	case MetricCPUPercent:
		return m.CPU.Percent, "cpu", true
	case MetricLoad1:
		return m.CPU.Load1, "load1", true
	}
	return v, what, ok
}

// Evaluator keeps the state of each rule between samples. Not safe for
// concurrent use: the metrics loop owns it.
type Evaluator struct {
	rules []Rule
	state []ruleState
}

type ruleState struct {
	since  time.Time // when the condition started holding; zero when it does not
	firing bool
}

// New returns an evaluator for rules (already validated).
func New(rules []Rule) *Evaluator {
	return &Evaluator{rules: rules, state: make([]ruleState, len(rules))}
}

// Firing returns the names of the rules that are firing.
func (e *Evaluator) Firing() []string {
	var out []string
	for i, s := range e.state {
		if s.firing {
			out = append(out, e.rules[i].Name)
		}
	}
	return out
}

// Evaluate feeds one sample taken at now and returns the alerts that
// changed state: firing once when a rule trips, resolved once when it clears.
func (e *Evaluator) Evaluate(m *protocol.RobotMetrics, now time.Time) []protocol.RobotAlert {
	var out []protocol.RobotAlert
	for i := range e.rules {
		r, s := &e.rules[i], &e.state[i]
		v, what, ok := Value(r.Metric, m)
		if !ok {
			s.since = time.Time{} // no data: neither fire nor resolve
			continue
		}
		breach := v >= r.Threshold
		clear := v < r.Threshold-r.Hysteresis
		if r.Op == "<=" {
			breach = v <= r.Threshold
			clear = v > r.Threshold+r.Hysteresis
		}
		switch {
		case !s.firing && breach:
			if s.since.IsZero() {
				s.since = now
			}
			if now.Sub(s.since) >= r.For {
				s.firing = true
				out = append(out, protocol.RobotAlert{Alert: r.Name, Severity: r.Severity, State: "firing",
					Message: fmt.Sprintf("%s %s is %.1f, %s %g for %s", r.Metric, what, v, r.Op, r.Threshold, r.For), Value: v, Threshold: r.Threshold})
			}
		case !s.firing:
			s.since = time.Time{}
		case s.firing && clear:
			s.firing, s.since = false, time.Time{}
			out = append(out, protocol.RobotAlert{Alert: r.Name, Severity: r.Severity, State: "resolved",
				Message: fmt.Sprintf("%s %s is back to %.1f", r.Metric, what, v), Value: v, Threshold: r.Threshold})
		}
	}
	return out
}
