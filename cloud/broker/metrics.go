package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Collectors returns the broker's counters and gauges for Prometheus, as
// fleet_relay_embedded_broker_*.
func (b *Broker) Collectors() []prometheus.Collector {
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "embedded_broker",
			Name: name + "_total", Help: help}, func() float64 { return float64(v.Load()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Subsystem: "embedded_broker",
			Name: name, Help: help}, f)
	}
	s := b.stats
	return []prometheus.Collector{
		counter("auth_failures", "Logins refused: unknown user or wrong password.", &s.AuthFailures),
		counter("auth_throttled", "Logins refused unchecked: too many failures from the client address.", &s.AuthThrottled),
		counter("connects_refused", "Authenticated CONNECTs refused: client id, Will or another account's session.", &s.ConnectsRefused),
		counter("publish_refused", "Publishes refused: topic or retain flag not allowed for the account.", &s.PublishRefused),
		counter("retained_evicted", "A robot's oldest retained session state dropped for a newer one (per-robot cap).", &s.RetainedEvicted),
		counter("retained_refused", "Retained messages delivered but not kept: a retained cap was reached.", &s.RetainedRefused),
		counter("origin_refused", "MQTT-over-WebSocket upgrades refused: Origin not allowed.", &s.OriginRefused),
		counter("sessions_expired", "Disconnected persistent sessions dropped after their expiry.", &s.SessionsExpired),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "embedded_broker",
			Name: "inflight_dropped_total", Help: "QoS 1/2 messages dropped because a client's inflight store was full (limits.max_inflight)."},
			func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.InflightDropped)) }),
		gauge("clients_connected", "Clients connected now.", func() float64 { return float64(atomic.LoadInt64(&b.srv.Info.ClientsConnected)) }),
		gauge("retained_messages", "Retained messages held.", func() float64 { n, _ := b.retained.totals(); return float64(n) }),
		gauge("retained_bytes", "Payload bytes of the retained messages held.", func() float64 { _, n := b.retained.totals(); return float64(n) }),
	}
}
