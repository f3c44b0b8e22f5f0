package conn

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Admission paces new dashboard connections. A relay restart or a load
// balancer failover brings every dashboard back at once; their handshakes,
// subscribes and snapshots would take the CPU the connected clients' live
// frames need (docs/BENCHMARKS.md, storm). Admission lets a short burst in at
// once, holds the rest in line at a steady rate, and answers 503 with
// Retry-After to a connection that would wait longer than its bound, so the
// line (and the goroutines in it) never outgrows rate × wait. A nil
// *Admission admits everything.
type Admission struct {
	lim     *rate.Limiter
	maxWait time.Duration
	stats   AdmissionStats
}

// AdmissionStats count what admission did. All fields are atomic.
type AdmissionStats struct {
	Admitted atomic.Int64 // connections let in
	Delayed  atomic.Int64 // of those, held in line first
	Refused  atomic.Int64 // answered 503: the line was longer than the wait bound, or the client left
}

// NewAdmission admits perSecond connections per second after a burst of a
// quarter second's worth (at least 1); a connection waits at most maxWait
// (≤ 0: 10 s). perSecond ≤ 0 returns nil: no pacing.
func NewAdmission(perSecond float64, maxWait time.Duration) *Admission {
	if perSecond <= 0 {
		return nil
	}
	if maxWait <= 0 {
		maxWait = 10 * time.Second
	}
	burst := max(1, int(math.Ceil(perSecond/4)))
	return &Admission{lim: rate.NewLimiter(rate.Limit(perSecond), burst), maxWait: maxWait}
}

// Stats returns the counters (zero ones for a nil Admission).
func (a *Admission) Stats() *AdmissionStats {
	if a == nil {
		return &AdmissionStats{}
	}
	return &a.stats
}

// Wait holds the request in line until it may connect and returns true, or
// answers 503 with Retry-After (the line is longer than the wait bound) and
// returns false; it returns false without answering when the client leaves.
func (a *Admission) Wait(w http.ResponseWriter, r *http.Request) bool {
	if a == nil {
		return true
	}
	res := a.lim.Reserve()
	d := res.Delay()
	if d > a.maxWait {
		res.Cancel()
		a.stats.Refused.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(min(d, time.Hour).Seconds()))))
		http.Error(w, "too many connections at once; try again later", http.StatusServiceUnavailable)
		return false
	}
	if d > 0 {
		a.stats.Delayed.Add(1)
		if !sleepCtx(r.Context(), d) {
			res.Cancel()
			a.stats.Refused.Add(1)
			return false
		}
	}
	a.stats.Admitted.Add(1)
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
