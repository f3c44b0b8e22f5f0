package hub

import (
	"slices"

	"github.com/robotfleet/fleetlink/protocol"
)

// Entry is one cached event with its JSON envelope.
type Entry struct {
	Ev  *protocol.Event
	Raw []byte
}

// ring holds a room's recent events for snapshots and since_seq resume,
// capped in count and bytes.
type ring struct {
	es       []*Entry // oldest first; append reuses the tail, reslicing frees the head
	bytes    int
	maxN     int
	maxBytes int
	// coverFrom: the ring holds every event of the robot with a larger seq
	// (that belongs in this ring); -1 until the first event.
	coverFrom int64
	// gapped: the relay may have missed events since the last one held; no
	// resume is recovered until the next live event moves coverFrom up to
	// just below it.
	gapped bool
}

func newRing(maxN, maxBytes int) *ring { return &ring{maxN: maxN, maxBytes: maxBytes, coverFrom: -1} }

// gap records that events may have been missed from here on (MQTT session
// lost, a queue overflowed, retained messages re-sent on a resubscribe).
func (r *ring) gap() { r.gapped = true }

// add appends e. A retained event stands for a gap before it (the broker
// keeps only the latest), so it moves coverFrom up to its seq; the first
// live event after a gap moves it to just below its own seq.
// It returns the change of the ring's bytes.
func (r *ring) add(e *Entry, retained bool) int {
	before := r.bytes
	seq := e.Ev.Seq
	switch {
	case retained:
		r.coverFrom = max(r.coverFrom, seq)
	case r.gapped:
		r.coverFrom = max(r.coverFrom, seq-1)
		r.gapped = false
	case r.coverFrom < 0:
		r.coverFrom = seq - 1 // the first event the relay saw
	}
	for len(r.es) > 0 && (len(r.es) >= r.maxN || r.bytes+len(e.Raw) > r.maxBytes) {
		r.dropOldest()
	}
	r.es = append(r.es, e)
	r.bytes += len(e.Raw)
	return r.bytes - before
}

// dropOldest evicts the oldest event; the ring no longer covers its seq.
func (r *ring) dropOldest() {
	old := r.es[0]
	r.es[0] = nil
	r.es = r.es[1:]
	r.bytes -= len(old.Raw)
	r.coverFrom = max(r.coverFrom, old.Ev.Seq)
}

// trim evicts the oldest events until the ring holds at most maxBytes and
// returns the bytes freed.
func (r *ring) trim(maxBytes int) int {
	before := r.bytes
	for len(r.es) > 0 && r.bytes > maxBytes {
		r.dropOldest()
	}
	return before - r.bytes
}

// all returns the held events ordered by seq.
func (r *ring) all() []*Entry {
	out := slices.Clone(r.es)
	sortBySeq(out)
	return out
}

// since returns the events with seq > s (and a Last Will that came after
// them), and whether the ring still holds all of them.
func (r *ring) since(s int64) ([]*Entry, bool) {
	if r.coverFrom < 0 || s < r.coverFrom || r.gapped {
		return nil, false
	}
	var out, late []*Entry
	passed := false // an event at or past s has arrived
	for _, e := range r.es {
		switch {
		case e.Ev.Seq > s:
			out = append(out, e)
			passed = true
		case e.Ev.Seq == s:
			passed = true
		case passed && e.Ev.Type == protocol.TypeRobotStatus:
			// A Last Will: numbered when its connection was made, published
			// after everything else; it goes last, as it came.
			late = append(late, e)
		}
	}
	sortBySeq(out)
	return append(out, late...), true
}

func sortBySeq(es []*Entry) {
	slices.SortStableFunc(es, func(a, b *Entry) int {
		switch {
		case a.Ev.Seq < b.Ev.Seq:
			return -1
		case a.Ev.Seq > b.Ev.Seq:
			return 1
		}
		return 0
	})
}
