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
	replayed atomic.Bool   // replayed, and followed up to where the stream stood at SUBACK
	events   atomic.Int64  // replayed at start
	live     atomic.Int64  // delivered live from the stream
	followed atomic.Uint64 // stream sequence of the last event ingested
}

// runWithHistory opens the stream (retrying while NATS is unreachable),
// replays it into the ingest path, then follows it: with history on, the
// stream is the live path for every event it keeps (status, alerts,
// notifications, session events and state), and MQTT brings only metrics
// and command replies (ingest.Options.MetricsAndRepliesOnly). The stream
// holds what the broker took from the robots whether or not this relay
// was subscribed,
// in the order it took it, so a restarted or new replica misses nothing
// and no MQTT redelivery can reorder or drop an event. The relay reports
// ready once MQTT is subscribed and the stream is followed up to where it
// stood then.
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
	defer st.Close()
	h.store.Store(st)
	feed := func(topic string, payload []byte) { r.ingest.Inject(topic, payload) }
	last, n, err := st.Replay(ctx, 0, feed)
	if err != nil {
		r.log.Warn("history: replay stopped early", "err", err, "events", n)
	}
	h.events.Add(int64(n))
	h.followed.Store(last)
	startIngest()
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		for ctx.Err() == nil {
			err := st.Follow(ctx, h.followed.Load(), func(topic string, payload []byte, seq uint64) {
				r.ingest.Inject(topic, payload)
				h.live.Add(1)
				h.followed.Store(seq)
			}, func(from, to uint64) {
				r.log.Warn("history: events left the stream before the relay read them; every room is told", "from", from, "to", to)
				r.hub.MarkGap("", history.GapDropped)
			})
			if err != nil {
				r.log.Warn("history: following the stream", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}()
	defer func() { <-followed }()
	for !r.ingest.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Ready once the live path has caught up with the stream as it stood
	// when MQTT was subscribed (bounded: a busy stream never "catches up").
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	target, err := st.LastSeq(lctx)
	for err == nil && h.followed.Load() < target && lctx.Err() == nil {
		select {
		case <-lctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	h.replayed.Store(true)
	r.log.Info("history replayed; following the stream", "events", n, "stream_seq", h.followed.Load(), "took", time.Since(began).Round(time.Millisecond))
	<-ctx.Done()
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
