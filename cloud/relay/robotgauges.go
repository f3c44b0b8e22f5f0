package relay

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/robotfleet/fleetlink/cloud/metricshistory"
)

// registerHistoryMetrics exports the metrics history's own size and drop
// counters, and, when robotGauges is on, one set of fleet_robot_* gauges
// per robot. Those are read from the history's latest values at scrape
// time; the history is bounded by hub.max_robots, so are the series.
func registerHistoryMetrics(reg *prometheus.Registry, s *metricshistory.Store, robotGauges bool) {
	gauge := func(name, help string, f func(metricshistory.Stats) int) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Subsystem: "history", Name: name, Help: help},
			func() float64 { return float64(f(s.Stats())) }))
	}
	counter := func(name, help string, f func(metricshistory.Stats) int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "history", Name: name, Help: help},
			func() float64 { return float64(f(s.Stats())) }))
	}
	gauge("robots", "Robots in the metrics history.", func(st metricshistory.Stats) int { return st.Robots })
	gauge("points", "Points (steps) held in the metrics history.", func(st metricshistory.Stats) int { return st.Points })
	gauge("bytes", "Approximate bytes held by the metrics history.", func(st metricshistory.Stats) int { return st.Bytes })
	counter("points_dropped_total", "History points dropped to stay within history.robot_bytes or history.total_bytes.",
		func(st metricshistory.Stats) int64 { return st.PointsDropped })
	counter("robots_evicted_total", "Robots forgotten by the metrics history past hub.max_robots.",
		func(st metricshistory.Stats) int64 { return st.RobotsEvicted })
	counter("late_total", "robot.metrics older than the robot's newest, not charted.",
		func(st metricshistory.Stats) int64 { return st.Late })
	counter("invalid_total", "robot.metrics or robot.status the metrics history could not decode.",
		func(st metricshistory.Stats) int64 { return st.Invalid })
	if robotGauges {
		reg.MustRegister(&robotCollector{store: s})
	}
}

// The per-robot gauges (prometheus.robot_gauges).
var (
	robotLabels = []string{"robot"}
	gpuLabels   = []string{"robot", "gpu"}

	descOnline   = robotDesc("online", "1 while the robot's retained status is online, 0 when offline.", robotLabels)
	descCPU      = robotDesc("cpu_percent", "Whole-machine CPU use, percent.", robotLabels)
	descMem      = robotDesc("memory_percent", "RAM used of total, percent.", robotLabels)
	descMemUsed  = robotDesc("memory_used_bytes", "RAM used, bytes.", robotLabels)
	descTemp     = robotDesc("temperature_celsius", "The hottest temperature sensor, °C.", robotLabels)
	descGPUUtil  = robotDesc("gpu_util_percent", "GPU utilisation, percent.", gpuLabels)
	descGPUMem   = robotDesc("gpu_memory_percent", "GPU memory used of total, percent.", gpuLabels)
	descGPUTemp  = robotDesc("gpu_temperature_celsius", "GPU temperature, °C.", gpuLabels)
	descSpool    = robotDesc("spool_depth", "Events waiting in the agent's durable outbox.", robotLabels)
	descAlerts   = robotDesc("alerts_firing", "Alerts the robot reports firing.", robotLabels)
	descSessions = robotDesc("sessions_running", "Sessions running on the robot.", robotLabels)
	descMetricTS = robotDesc("last_metrics_timestamp_seconds", "Robot clock time of the latest robot.metrics, unix seconds.", robotLabels)
)

func robotDesc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("fleet_robot_"+name, help, labels, nil)
}

type robotCollector struct{ store *metricshistory.Store }

func (c *robotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOnline, descCPU, descMem, descMemUsed, descTemp, descGPUUtil, descGPUMem,
		descGPUTemp, descSpool, descAlerts, descSessions, descMetricTS} {
		ch <- d
	}
}

func (c *robotCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, l := range c.store.Latest(nil) {
		switch l.State {
		case "online":
			g(descOnline, 1, l.ID)
		case "offline":
			g(descOnline, 0, l.ID)
		}
		g(descAlerts, float64(l.AlertsFiring), l.ID)
		g(descSessions, float64(l.SessionsRunning), l.ID)
		if l.MetricsAt.IsZero() {
			continue
		}
		g(descCPU, l.CPUPercent, l.ID)
		g(descMem, l.MemPercent, l.ID)
		g(descMemUsed, float64(l.MemUsed), l.ID)
		if l.HottestSensor != "" {
			g(descTemp, l.HottestC, l.ID)
		}
		for _, gpu := range l.GPUs {
			idx := strconv.Itoa(gpu.Index)
			g(descGPUUtil, gpu.UtilPercent, l.ID, idx)
			g(descGPUMem, gpu.MemPercent, l.ID, idx)
			g(descGPUTemp, gpu.TempC, l.ID, idx)
		}
		g(descSpool, float64(l.SpoolDepth), l.ID)
		g(descMetricTS, float64(l.MetricsAt.UnixMilli())/1000, l.ID)
	}
}
