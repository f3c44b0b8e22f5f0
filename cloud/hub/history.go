package hub

import (
	"context"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// History serves since_seq resumes that reach back before a ring: the
// relay's JetStream history (cloud/history) when it has one.
type History interface {
	// Since returns robot's events (one session's when session is not
	// empty) with seq greater than since, oldest first, and whether they
	// are all there.
	Since(ctx context.Context, robot, session string, since int64) (raws [][]byte, complete bool, err error)
}

// historyTimeout bounds one history read; past it the resume falls back to
// the snapshot (recovered: false), as without history.
const historyTimeout = 5 * time.Second

// older reads from the history what a resume of room since sinceSeq needs
// when the ring no longer holds it: nil when the ring covers it, there is
// no history, or the history cannot serve it whole. Called without h.mu: it
// waits on the network.
func (h *Hub) older(kind, id string, since int64, who Authorizer) (robot string, es []*Entry) {
	if h.o.History == nil || since < 0 || (kind != "robot" && kind != "session") {
		return "", nil
	}
	h.mu.Lock()
	robot, covered := h.st.covers(kind, id, since, who)
	h.mu.Unlock()
	if covered || robot == "" {
		return "", nil
	}
	session := ""
	if kind == "session" {
		session = id
	}
	ctx, cancel := context.WithTimeout(context.Background(), historyTimeout)
	defer cancel()
	raws, complete, err := h.o.History.Since(ctx, robot, session, since)
	if err != nil || !complete {
		if err != nil {
			h.log.Warn("history read failed; the resume falls back to the snapshot", "room", kind+":"+id, "err", err)
		}
		return "", nil
	}
	es = make([]*Entry, 0, len(raws)) // not nil: complete, even when empty
	for _, raw := range raws {
		ev, err := protocol.Decode(raw)
		if err != nil || ev.Robot != robot || (session != "" && ev.Type == protocol.TypeSessionState) {
			continue // the session room's state comes from the cache
		}
		es = append(es, &Entry{Ev: ev, Raw: raw})
	}
	return robot, es
}

// covers reports which robot a resume of room is about and whether its ring
// still holds everything after since. Session rooms are served from the
// history only when one granted robot has the id. Called with h.mu held.
func (st *state) covers(kind, id string, since int64, who Authorizer) (robot string, covered bool) {
	switch kind {
	case "robot":
		r := st.robots[id]
		if r == nil || !who.CanRobot(id) {
			return "", true
		}
		_, ok := r.ring.since(since)
		return id, ok
	case "session":
		var granted []string
		for _, rid := range st.byID[id] {
			if who.CanRobot(rid) {
				granted = append(granted, rid)
			}
		}
		if len(granted) != 1 {
			return "", true
		}
		s := st.sessions[sessKey{granted[0], id}]
		if s == nil {
			return "", true
		}
		_, ok := s.ring.since(since)
		return granted[0], ok
	}
	return "", true
}

// withOlder completes a resume with what the history gave: the ring is
// asked from the last history event on, and the two are joined without
// repeating an event. Called with h.mu held.
func (st *state) withOlder(kind, id string, since int64, who Authorizer, older []*Entry) Snapshot {
	from := since
	for _, e := range older {
		from = max(from, e.Ev.Seq)
	}
	snap := st.snapshot(kind, id, from, who)
	if !snap.Recovered {
		return st.snapshot(kind, id, since, who) // the ring moved on meanwhile: as without history
	}
	seen := make(map[string]bool, len(older))
	out := make([]*Entry, 0, len(older)+len(snap.Events))
	for _, e := range older {
		seen[e.Ev.ID] = true
		out = append(out, e)
	}
	for _, e := range snap.Events {
		if !seen[e.Ev.ID] {
			out = append(out, e)
		}
	}
	snap.Events = out
	return snap
}
