package relay

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/socketio"
)

// newMetrics registers the relay's metrics on a private registry. Counters
// and gauges read, at scrape time, the counters each component owns: the
// ingest's, the hub's, and the connection layers' of both wire formats
// (summed); the fan-out latency histogram is observed by the writers.
func newMetrics(r *Relay, ready func() bool) (*prometheus.Registry, prometheus.Histogram) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, s, in := r.hub, r.hub.Stats(), r.ingest.Stats()
	wires := func(f func(conn.Counts) int64) func() int64 { return func() int64 { return f(r.conns()) } }
	counter := func(name, help string, f func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Name: name, Help: help}, f))
	}
	counter("messages_in_total", "MQTT messages received.", in.MessagesIn.Load)
	counter("messages_invalid_total", "MQTT messages that failed to decode or validate (not forwarded).", in.Invalid.Load)
	counter("messages_duplicate_total", "Events dropped by de-duplication on event id.", s.Duplicates.Load)
	counter("ingest_dropped_total", "MQTT messages dropped because the ingest queue was full.", in.Dropped.Load)
	counter("messages_out_total", "Event frames written to clients.", wires(func(c conn.Counts) int64 { return c.MessagesOut }))
	counter("messages_dropped_total", "Event frames dropped for clients that read too slowly.", wires(func(c conn.Counts) int64 { return c.Dropped }))
	counter("metrics_replaced_total", "Queued robot.metrics frames replaced by newer ones (latest-only).", wires(func(c conn.Counts) int64 { return c.Replaced }))
	counter("slow_consumer_closes_total", "Clients closed with 4008 slow consumer.", wires(func(c conn.Counts) int64 { return c.SlowCloses }))
	counter("mqtt_reconnects_total", "MQTT connections lost (each followed by reconnection attempts).", in.Reconnects.Load)
	counter("robots_evicted_total", "Robots evicted from the caches.", s.Evicted.Load)
	counter("encode_errors_total", "Frames a wire format failed to encode.", s.EncodeErrors.Load)
	counter("cache_evictions_total", "Cache entries evicted to keep a robot within hub.robot_bytes or the caches within hub.total_bytes.", s.BudgetEvictions.Load)
	counter("text_clipped_total", "Events whose data strings were cut to hub.max_text_bytes.", s.TextClipped.Load)
	counter("gaps_total", "Times the relay may have missed events (MQTT session not resumed, a queue overflowed): gap notices sent.", s.Gaps.Load)
	counter("stale_status_total", "robot.status events dropped for an older connection epoch than the cached one.", s.StaleStatus.Load)
	gauge("cache_bytes", "Envelope bytes in the hub's caches.", func() float64 { return float64(s.CachedBytes.Load()) })
	gauge("connections", "Open WebSocket connections.", func() float64 { return float64(r.conns().Connections) })
	gauge("queue_bytes", "Bytes waiting in client queues.", func() float64 { return float64(r.conns().QueueBytes) })
	gauge("rooms", "Rooms with at least one subscriber.", func() float64 { return float64(h.Counts().Rooms) })
	gauge("subscriptions", "Client subscriptions to rooms.", func() float64 { return float64(h.Counts().Subscriptions) })
	gauge("robots_known", "Robots in the caches.", func() float64 { return float64(h.Counts().RobotsKnown) })
	gauge("mqtt_ready", "1 while the MQTT connection is up and subscribed.", func() float64 {
		if ready() {
			return 1
		}
		return 0
	})
	lat := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "fleet_relay", Name: "fanout_latency_seconds",
		Help:    "From an event's ts (on the robot) to its write to a client.",
		Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 10}})
	reg.MustRegister(lat)
	return reg, lat
}

// registerSocketIOMetrics exports the Socket.IO endpoint's own counters; its
// deliveries are already in the hub's shared counters.
func registerSocketIOMetrics(reg *prometheus.Registry, s *socketio.Stats) {
	counter, gauge := funcMetrics(reg, "socketio")
	gauge("sessions", "Open Engine.IO sessions.", s.Sessions.Load)
	gauge("websockets", "Engine.IO sessions on the WebSocket transport.", s.WebSockets.Load)
	counter("handshakes_total", "Engine.IO sessions opened.", s.Handshakes.Load)
	counter("upgrades_total", "Polling sessions upgraded to WebSocket.", s.Upgrades.Load)
	counter("connects_total", "Successful Socket.IO CONNECTs.", s.Connects.Load)
	counter("connect_errors_total", "Refused Socket.IO CONNECTs (bad token, bad namespace).", s.ConnectErrors.Load)
	counter("heartbeat_timeouts_total", "Sessions closed for missing heartbeats or not connecting in time.", s.HeartbeatTimeouts.Load)
	counter("bad_packets_total", "Undecodable packets and refused events.", s.BadPackets.Load)
	counter("refused_total", "HTTP requests refused (unknown sid, bad transport, origin, full).", s.Refused.Load)
	counter("pending_refused_total", "Handshakes refused because too many sessions had not joined the namespace yet.", s.PendingRefused.Load)
}

// funcMetrics returns registrars of counters and gauges of one subsystem
// that read an int64 at scrape time.
func funcMetrics(reg *prometheus.Registry, subsystem string) (counter, gauge func(name, help string, f func() int64)) {
	counter = func(name, help string, f func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: subsystem, Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	gauge = func(name, help string, f func() int64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Subsystem: subsystem, Name: name, Help: help},
			func() float64 { return float64(f()) }))
	}
	return counter, gauge
}

// registerAdmissionMetrics exports what the pacing of new connections did.
func registerAdmissionMetrics(reg *prometheus.Registry, s *conn.AdmissionStats) {
	counter, _ := funcMetrics(reg, "admission")
	counter("admitted_total", "New connections (/ws and Socket.IO sessions) let in.", s.Admitted.Load)
	counter("delayed_total", "New connections held in line before they were let in (ws.accept_rate_per_core).", s.Delayed.Load)
	counter("refused_total", "New connections answered 503: the line was longer than ws.accept_wait, or the client left while waiting.", s.Refused.Load)
}

// registerHTTPMetrics exports the per-address connection cap's counters.
func registerHTTPMetrics(reg *prometheus.Registry, l *connLimiter) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Subsystem: "http", Name: "connections",
		Help: "Open HTTP connections (WebSockets included)."}, func() float64 { return float64(l.current.Load()) }))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "http", Name: "conns_refused_total",
		Help: "Connections closed at accept: http.max_conns_per_addr reached for their address."},
		func() float64 { return float64(l.refused.Load()) }))
}
