// Package ratelog is a rate-limited logger: at most one line per key per
// interval, and the next line that gets through says how many of that key
// were suppressed. A thousand slow clients make one line, not a thousand.
package ratelog

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// maxKeys bounds the keys remembered; past it the table starts over (a
// few extra lines rather than unbounded memory).
const maxKeys = 1024

// Logger logs warnings through an slog.Logger, rate-limited per key.
type Logger struct {
	log        *slog.Logger
	every      time.Duration
	suppressed atomic.Int64

	mu   sync.Mutex // guards keys
	keys map[string]*entry
}

type entry struct {
	last time.Time
	n    int // suppressed since last
}

// New returns a Logger that lets one line per key through every interval.
func New(log *slog.Logger, every time.Duration) *Logger {
	return &Logger{log: log, every: every, keys: map[string]*entry{}}
}

// Warn logs msg at warn level unless a line with key was logged less than
// the interval ago; then it only counts it.
func (l *Logger) Warn(key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	e := l.keys[key]
	if e != nil && now.Sub(e.last) < l.every {
		e.n++
		l.mu.Unlock()
		l.suppressed.Add(1)
		return
	}
	if e == nil {
		if len(l.keys) >= maxKeys {
			clear(l.keys)
		}
		e = &entry{}
		l.keys[key] = e
	}
	n := e.n
	e.last, e.n = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Warn(msg, args...)
}

// Suppressed returns how many lines were not logged, in total.
func (l *Logger) Suppressed() int64 { return l.suppressed.Load() }
