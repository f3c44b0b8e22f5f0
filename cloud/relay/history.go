package relay

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/robotfleet/fleetlink/cloud/history"
)

// historyRun replays the JetStream history into the hub before the relay
// reports ready (config nats.urls / FLEET_RELAY_NATS_URL).
type historyRun struct {
	opts     history.Options
	store    atomic.Pointer[history.Store]
	replayed atomic.Bool // the first replay and its catch-up are done
	events   atomic.Int64
	took     atomic.Int64 // nanoseconds from Run to replayed
}

// runWithHistory opens the stream (retrying while NATS is unreachable),
// replays it into the ingest path, then starts MQTT ingest (startIngest) and,
// once subscribed, replays what reached the stream meanwhile: the broker
// hands a new subscriber only retained messages, so without the catch-up a
// new replica would miss what was published between the replay and its
// SUBACK. Duplicates are dropped by event id in the hub.
func (r *Relay) runWithHistory(ctx context.Context, startIngest func()) {
	h := r.history
	began := time.Now()
	backoff := 250 * time.Millisecond
	var st *history.Store
	for {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		s, err := history.Open(octx, h.opts)
		cancel()
		if err == nil {
			st = s
			break
		}
		r.log.Warn("history: NATS not reachable; not ready until it is", "err", err)
		select {
		case <-ctx.Done():
			startIngest() // Run's shutdown waits for ingest
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	h.store.Store(st)
	feed := func(topic string, payload []byte) { r.ingest.Inject(topic, payload) }
	last, n, err := st.Replay(ctx, 0, feed)
	if err != nil {
		r.log.Warn("history: replay stopped early", "err", err, "events", n)
	}
	h.events.Add(int64(n))
	startIngest()
	for !r.ingest.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, m, err := st.Replay(ctx, last, feed)
	if err != nil {
		r.log.Warn("history: catch-up replay stopped early", "err", err, "events", m)
	}
	h.events.Add(int64(m))
	h.took.Store(int64(time.Since(began)))
	h.replayed.Store(true)
	r.log.Info("history replayed", "events", n+m, "took", time.Since(began).Round(time.Millisecond))
	<-ctx.Done()
	st.Close()
}

// maxResumeEvents caps what one resume reads from the history; a client
// further behind gets the snapshot (recovered: false).
const maxResumeEvents = 10000

// historySince serves the hub's resumes older than its rings from the
// stream (hub.History).
type historySince struct{ h *historyRun }

func (s historySince) Since(ctx context.Context, robot, session string, since int64) ([][]byte, bool, error) {
	st := s.h.store.Load()
	if st == nil || !s.h.replayed.Load() {
		return nil, false, nil
	}
	evs, complete, err := st.Since(ctx, robot, session, since, maxResumeEvents)
	if len(evs) >= maxResumeEvents {
		complete = false
	}
	return evs, complete, err
}

// afterReplay answers 503 while the JetStream history is still being
// replayed: a client served then would get a partial snapshot, and the
// replayed events as live ones, older than what it already had.
func (r *Relay) afterReplay(h http.Handler) http.Handler {
	if r.history == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.history.replayed.Load() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "replaying the JetStream history; try again shortly", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, req)
	})
}
