package hub

import "sync/atomic"

// Stats are the hub's own counters: caches, de-duplication, gaps and
// encoding. The relay exports them to Prometheus; every other component
// (ingest, each wire format's connection layer, the broker) owns its own.
// All fields are atomic.
type Stats struct {
	Duplicates      atomic.Int64 // events dropped by the de-duplication by id
	Evicted         atomic.Int64 // robots evicted from the caches
	EncodeErrors    atomic.Int64 // frames a Format failed to encode
	Gaps            atomic.Int64 // MarkGap calls: the relay may have missed events
	StaleStatus     atomic.Int64 // robot.status events dropped for an epoch older than the cached one
	BudgetEvictions atomic.Int64 // cache entries evicted to keep a robot within RobotBytes or the caches within TotalBytes
	TextClipped     atomic.Int64 // events whose data strings were cut to MaxTextBytes
	CachedBytes     atomic.Int64 // envelope bytes in the caches
}

// QueueStats are the counters of a set of client Queues (those of one
// wire format's connection layer). All fields are atomic.
type QueueStats struct {
	Dropped  atomic.Int64 // event frames dropped for clients that read too slowly
	Replaced atomic.Int64 // queued robot.metrics frames replaced by newer ones (latest-only)
	Bytes    atomic.Int64 // bytes waiting in the queues
}
