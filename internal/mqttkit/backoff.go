package mqttkit

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff defaults. With them a client that lost its broker retries after
// 0.25–0.5 s, then 0.5–1 s, 1–2 s, 2–4 s, then every 4–8 s for the first two
// minutes of the outage: a broker that comes back within that time sees
// each client within 8 s, the reconnects spread evenly over those 8 s (no
// storm: 1,000 clients make ~125 connects/s). After two minutes the delay
// keeps doubling up to a minute, so a long outage costs the broker little.
const (
	DefaultBackoffMin     = 500 * time.Millisecond
	DefaultBackoffFastMax = 8 * time.Second
	DefaultBackoffFastFor = 2 * time.Minute
	DefaultBackoffMax     = time.Minute
)

// Backoff is a reconnect schedule: exponential from Min, capped at FastMax
// while the outage is younger than FastFor and at Max after that, each
// delay drawn uniformly from [d/2, d] so that a fleet that lost its broker
// at the same instant does not come back in lockstep. The zero value uses
// the defaults. Not safe for concurrent use: one per reconnect loop.
type Backoff struct {
	// Min is the first delay. Zero means 500ms.
	Min time.Duration
	// FastMax caps the delay during the first FastFor of an outage. Zero
	// means 8s; it is raised to Min and lowered to Max when out of range.
	FastMax time.Duration
	// FastFor is how long an outage keeps the FastMax cap. Zero means 2m;
	// negative means never (the cap is Max from the start).
	FastFor time.Duration
	// Max caps the delay after FastFor. Zero means 1m.
	Max time.Duration
	// Now is the clock (tests). Nil means time.Now.
	Now func() time.Time

	start time.Time     // first Next of this outage; zero after Reset
	cur   time.Duration // the next un-jittered delay
}

func (b *Backoff) fill() {
	if b.Min <= 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	b.Max = max(b.Max, b.Min)
	if b.FastMax <= 0 {
		b.FastMax = DefaultBackoffFastMax
	}
	b.FastMax = min(max(b.FastMax, b.Min), b.Max)
	if b.FastFor == 0 {
		b.FastFor = DefaultBackoffFastFor
	}
	if b.Now == nil {
		b.Now = time.Now
	}
}

// Next returns the delay before the next attempt and advances the schedule.
func (b *Backoff) Next() time.Duration {
	b.fill()
	now := b.Now()
	if b.start.IsZero() {
		b.start, b.cur = now, b.Min
	}
	limit := b.Max
	if b.FastFor > 0 && now.Sub(b.start) < b.FastFor {
		limit = b.FastMax
	}
	d := min(b.cur, limit)
	b.cur = min(d*2, b.Max)
	return d/2 + rand.N(d/2+1)
}

// Reset starts a new outage: the next delay is Min again. Call it once a
// connection has held for a while (not on every connect: a broker that
// accepts and drops at once must not be hammered at Min).
func (b *Backoff) Reset() { b.start, b.cur = time.Time{}, 0 }

// Outage returns how long the current outage has lasted (zero after Reset).
func (b *Backoff) Outage() time.Duration {
	if b.start.IsZero() {
		return 0
	}
	b.fill()
	return b.Now().Sub(b.start)
}

// Sleep waits Next() or until ctx is done; it reports whether to go on.
func (b *Backoff) Sleep(ctx context.Context) bool { return SleepCtx(ctx, b.Next()) }

// SleepCtx waits d or until ctx is done; it reports whether ctx is still live.
func SleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
