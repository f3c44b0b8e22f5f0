// Package dedup remembers the last N event ids, to drop QoS 1 redeliveries
// and spool replays (spec §1: event ids are unique) in bounded memory.
package dedup

// Ring remembers the last n ids added. It is not safe for concurrent use.
type Ring struct {
	ids  map[string]struct{}
	fifo []string
	next int
}

// New returns a Ring of n ids (n ≥ 1).
func New(n int) *Ring {
	n = max(n, 1)
	return &Ring{ids: make(map[string]struct{}, n), fifo: make([]string, n)}
}

// Add records id and reports whether it was new; the oldest id is
// forgotten once n are held.
func (r *Ring) Add(id string) bool {
	if _, dup := r.ids[id]; dup {
		return false
	}
	if old := r.fifo[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.fifo[r.next] = id
	r.next = (r.next + 1) % len(r.fifo)
	r.ids[id] = struct{}{}
	return true
}
