package hub

import "sync/atomic"

// Stats are the relay's counters, shared by ingest, hub and the wire
// adapters, and exported to Prometheus by the relay. All fields are atomic.
type Stats struct {
	MessagesIn      atomic.Int64 // MQTT messages handed to the relay
	Invalid         atomic.Int64 // MQTT messages that failed to decode or validate
	Duplicates      atomic.Int64 // events dropped by the de-duplication by id
	IngestDropped   atomic.Int64 // MQTT messages dropped because the ingest queue was full
	MessagesOut     atomic.Int64 // event frames written to clients
	ClientDropped   atomic.Int64 // event frames dropped for clients that read too slowly
	Replaced        atomic.Int64 // queued robot.metrics frames replaced by newer ones (latest-only)
	SlowCloses      atomic.Int64 // clients closed as slow consumers (4008)
	QueueBytes      atomic.Int64 // bytes waiting in client queues
	Connections     atomic.Int64 // open client connections
	Reconnects      atomic.Int64 // MQTT reconnections after a lost connection
	Evicted         atomic.Int64 // robots evicted from the caches
	EncodeErrors    atomic.Int64 // frames a Format failed to encode
	Gaps            atomic.Int64 // MarkGap calls: the relay may have missed events
	StaleStatus     atomic.Int64 // robot.status events dropped for an epoch older than the cached one
	BudgetEvictions atomic.Int64 // cache entries evicted to keep a robot within RobotBytes or the caches within TotalBytes
	TextClipped     atomic.Int64 // events whose data strings were cut to MaxTextBytes
	CachedBytes     atomic.Int64 // envelope bytes in the caches
}
