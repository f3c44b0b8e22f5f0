package hub

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
