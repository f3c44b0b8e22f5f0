package hub

import (
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// PartBytes is the most envelope bytes one snapshot part carries (spec §5:
// a larger snapshot arrives in parts marked more).
const PartBytes = 256 << 10

// Parts hands a snapshot out in parts, for the Streams of the wire formats.
// It orders the snapshot on the first call, outside the hub's lock.
type Parts struct {
	Snap  Snapshot
	next  int
	begun bool
}

// NewParts returns the parts of s.
func NewParts(s Snapshot) *Parts { return &Parts{Snap: s} }

// Bytes is what the snapshot counts against a client's queue while it
// waits: one part.
func (p *Parts) Bytes() int {
	n := 0
	for _, e := range p.Snap.Events {
		n += len(e.Raw)
		if n >= PartBytes {
			return PartBytes
		}
	}
	return n
}

// Next returns the entries of the next part (at least one, when any are
// left), whether it is the first part, and whether more parts follow.
func (p *Parts) Next() (part []*Entry, first, more bool) {
	if !p.begun {
		p.Snap.Order()
		p.begun, first = true, true
	}
	es := p.Snap.Events
	n, i := 0, p.next
	for i < len(es) && (i == p.next || n+len(es[i].Raw) <= PartBytes) {
		n += len(es[i].Raw)
		i++
	}
	part, p.next = es[p.next:i], i
	return part, first, i < len(es)
}

// SnapshotGate bounds the clients that encode and write snapshot parts at
// the same moment, and optionally the rate at which they write them. In a
// reconnect storm (a thousand dashboards re-subscribing to a large fleet at
// once) every one of them would otherwise be a runnable goroutine with a
// 256 KiB part to build and write, queued in the scheduler in front of the
// writers of live frames; behind the gate they take turns a part at a
// time. The rate (bytes/s) paces them further, for a relay whose snapshot
// bytes would otherwise take the CPU from live traffic: the storm then
// takes longer, live frames do not wait. A nil gate lets everyone through.
type SnapshotGate struct {
	slots chan struct{}
	lim   *rate.Limiter // nil: no pacing
	waits atomic.Int64
}

// NewSnapshotGate returns a gate of n slots (n < 1: one) that lets
// bytesPerSecond of parts through (0: no pacing).
func NewSnapshotGate(n int, bytesPerSecond int64) *SnapshotGate {
	g := &SnapshotGate{slots: make(chan struct{}, max(n, 1))}
	if bytesPerSecond > 0 {
		g.lim = rate.NewLimiter(rate.Limit(bytesPerSecond), max(int(bytesPerSecond/10), 2*PartBytes))
	}
	return g
}

// Waits counts the parts that had to wait for a slot or for the pace.
func (g *SnapshotGate) Waits() int64 {
	if g == nil {
		return 0
	}
	return g.waits.Load()
}

// Enter waits for a slot; it returns false, holding none, when done is
// closed first.
func (g *SnapshotGate) Enter(done <-chan struct{}) bool {
	if g == nil {
		return true
	}
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	g.waits.Add(1)
	select {
	case g.slots <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// Pace waits, holding the slot, until n more bytes of parts may be
// written; false when done is closed first (the slot is still held).
func (g *SnapshotGate) Pace(n int, done <-chan struct{}) bool {
	if g == nil || g.lim == nil || n <= 0 {
		return true
	}
	d := g.lim.ReserveN(time.Now(), min(n, g.lim.Burst())).Delay()
	if d <= 0 {
		return true
	}
	g.waits.Add(1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// Leave gives the slot back.
func (g *SnapshotGate) Leave() {
	if g != nil {
		<-g.slots
	}
}

// Part writes st's next part through the gate: it waits for a slot,
// encodes the part (its frames appended to buf[:0]), waits for the pace,
// hands each frame to write, and gives the slot back. more reports
// whether parts follow; ok is false when done closed first or a write
// failed.
func (g *SnapshotGate) Part(st Stream, buf [][]byte, done <-chan struct{}, write func([]byte) bool) (out [][]byte, more, ok bool) {
	if !g.Enter(done) {
		return buf, false, false
	}
	defer g.Leave()
	out, more = st.Next(buf[:0])
	n := 0
	for _, f := range out {
		n += len(f)
	}
	if !g.Pace(n, done) {
		return out, more, false
	}
	for i, f := range out {
		if !write(f) {
			return out, more, false
		}
		out[i] = nil
	}
	return out, more, true
}
