package relay

import (
	"context"
	"net/http"
	"time"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/metricshistory"
	"github.com/robotfleet/fleetlink/protocol"
)

// historyPoll is how often the metrics history takes the hub's latest
// robot.status and robot.metrics. Agents sample at 1 Hz by default; the
// history averages into steps of 5 s, so a missed sample costs nothing.
const historyPoll = time.Second

// historyFeed fills the metrics history from the hub's public API: the
// latest status and metrics of every robot (Hub.Robots), decoded only when
// they changed, and, for the per-robot gauges, room fleet's alerts and
// session events through an in-process subscriber. It forgets the robots
// the hub forgot, so the history is bounded by hub.max_robots too.
type historyFeed struct {
	hub   *hub.Hub
	store *metricshistory.Store
	last  map[string]seenRaw // robot → the raw envelopes taken last; guarded by being used by one goroutine
}

// seenRaw identifies a cached envelope by its first byte: the hub replaces
// an entry's bytes, never modifies them, so a new pointer is a new event.
type seenRaw struct{ status, metrics *byte }

func newHistoryFeed(h *hub.Hub, s *metricshistory.Store) *historyFeed {
	return &historyFeed{hub: h, store: s, last: map[string]seenRaw{}}
}

func first(raw []byte) *byte {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return &raw[0]
}

// poll takes what changed since the last poll.
func (f *historyFeed) poll() {
	robots := f.hub.Robots()
	known := make(map[string]struct{}, len(robots))
	for _, ri := range robots {
		known[ri.ID] = struct{}{}
		prev := f.last[ri.ID]
		cur := seenRaw{status: first(ri.Status), metrics: first(ri.Metrics)}
		if cur.status != nil && cur.status != prev.status {
			_ = f.store.Status(ri.ID, ri.Status) // counted in the store's stats
		}
		if cur.metrics != nil && cur.metrics != prev.metrics {
			_ = f.store.Metrics(ri.ID, ri.Metrics)
		}
		f.last[ri.ID] = cur
	}
	for id := range f.last {
		if _, ok := known[id]; !ok {
			delete(f.last, id)
			f.store.Forget(id)
		}
	}
}

// run polls until ctx ends.
func (f *historyFeed) run(ctx context.Context) {
	t := time.NewTicker(historyPoll)
	defer t.Stop()
	for {
		f.poll()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchFleet subscribes an in-process subscriber to room fleet that hands
// every robot.status, robot.alert and session event (and the snapshot's
// statuses and running sessions) to the store. The hub calls a Format's
// Event once per event and room before its fan-out, with the event already
// decoded, so this costs no extra decoding; nothing is queued. It counts as
// one subscriber of room fleet in the relay's stats.
func watchFleet(h *hub.Hub, s *metricshistory.Store) error {
	w := &fleetWatcher{store: s}
	return h.Subscribe(w, auth.Anonymous(), hub.RoomFleet, -1, func(snap hub.Snapshot) {
		for _, e := range snap.Events {
			s.Observe(e.Ev, e.Raw)
		}
	})
}

type fleetWatcher struct{ store *metricshistory.Store }

func (w *fleetWatcher) Format() hub.Format { return w }

func (w *fleetWatcher) Send(hub.Message) {}

func (w *fleetWatcher) Event(_ string, ev *protocol.Event, raw []byte) ([]byte, error) {
	w.store.Observe(ev, raw)
	return raw, nil
}

// historyAuthorize returns the request's principal: the one the /api/v1/*
// middleware (apiAuth) authenticated, or, on a mux without it, the token
// checked here like /ws does.
func historyAuthorize(a *auth.Authenticator) metricshistory.Authorize {
	return func(r *http.Request) (metricshistory.Grant, error) {
		if p, ok := auth.FromContext(r.Context()); ok {
			return p, nil
		}
		p, err := a.Authenticate(auth.FromRequest(r))
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}
