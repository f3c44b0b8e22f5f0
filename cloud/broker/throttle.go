package broker

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxThrottledAddrs bounds the throttle's table; past it, addresses share
// one overflow bucket (a spread-out attack is throttled as one).
const maxThrottledAddrs = 4096

// throttle limits failed logins per client address: each failure takes a
// token; an address with no token left is refused before its password is
// checked (so guessing is slow and costs the broker nothing).
type throttle struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	addrs map[string]*addrState // guarded by mu; at most maxThrottledAddrs+1 entries
}

type addrState struct {
	lim      *rate.Limiter
	failures int64     // since the entry was made
	logged   time.Time // last warning about this address
}

func newThrottle(perMinute float64, burst int) *throttle {
	return &throttle{limit: rate.Limit(perMinute / 60), burst: burst, addrs: map[string]*addrState{}}
}

// host strips the port from a remote address.
func host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// blocked reports whether addr has used up its failures, and whether to
// log that now (at most once a minute per address).
func (t *throttle) blocked(addr string, now time.Time) (blocked, logNow bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.addrs[addr]
	if !ok {
		s, ok = t.addrs["*"]
		if !ok || len(t.addrs) < maxThrottledAddrs {
			return false, false
		}
	}
	if s.lim.TokensAt(now) >= 1 {
		return false, false
	}
	logNow = now.Sub(s.logged) >= time.Minute
	if logNow {
		s.logged = now
	}
	return true, logNow
}

// failed records a failure from addr. It returns the failures counted for
// addr and whether to log now (at most once a minute per address).
func (t *throttle) failed(addr string, now time.Time) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.addrs[addr]
	if !ok {
		if len(t.addrs) >= maxThrottledAddrs {
			t.prune()
		}
		if len(t.addrs) >= maxThrottledAddrs {
			addr = "*"
		}
		if s, ok = t.addrs[addr]; !ok {
			s = &addrState{lim: rate.NewLimiter(t.limit, t.burst)}
			t.addrs[addr] = s
		}
	}
	s.lim.AllowN(now, 1)
	s.failures++
	logNow := now.Sub(s.logged) >= time.Minute
	if logNow {
		s.logged = now
	}
	return s.failures, logNow
}

// prune forgets addresses whose bucket is full again. Caller holds mu.
func (t *throttle) prune() {
	for a, s := range t.addrs {
		if s.lim.Tokens() >= float64(t.burst) {
			delete(t.addrs, a)
		}
	}
}

// verifier caches successful password checks per account, so a robot
// reconnecting (or a thousand after a broker restart) does not pay for a
// slow hash each time. The cache keeps a keyed HMAC of the password, never
// the password, and holds at most one entry per configured account.
type verifier struct {
	key []byte
	mu  sync.Mutex
	ok  map[string][]byte // guarded by mu: username → HMAC(key, password that verified)
}

func newVerifier() *verifier {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &verifier{key: k, ok: map[string][]byte{}}
}

func (v *verifier) check(user, stored, got string) bool {
	m := hmac.New(sha256.New, v.key)
	m.Write([]byte(got))
	sum := m.Sum(nil)
	v.mu.Lock()
	cached, ok := v.ok[user]
	v.mu.Unlock()
	if ok && hmac.Equal(cached, sum) {
		return true
	}
	if !checkPassword(stored, got) {
		return false
	}
	v.mu.Lock()
	v.ok[user] = sum
	v.mu.Unlock()
	return true
}
