package protocol

import (
	"crypto/rand"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// idPattern is the identifier rule of spec §1 for robot and session ids.
const idPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`

var idRe = regexp.MustCompile(idPattern)

// ValidID reports whether s is a valid robot or session id. It is idPattern
// written out (the relay checks several ids per message; the regexp was 12%
// of Decode), and a test holds the two equal.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// CheckID returns an error naming what and why when s is not a valid id.
func CheckID(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidID, what)
	}
	if !ValidID(s) {
		return fmt.Errorf("%w: %s %q must match %s", ErrInvalidID, what, s, idPattern)
	}
	return nil
}

// SanitizeID turns an arbitrary name (a hostname) into a valid id by
// replacing disallowed characters with '-' and truncating to 64 characters.
// It returns "robot" when nothing usable is left.
func SanitizeID(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			out = append(out, c)
		default:
			out = append(out, '-')
		}
	}
	for len(out) > 0 && !isAlnum(out[0]) {
		out = out[1:]
	}
	if len(out) > 64 {
		out = out[:64]
	}
	if len(out) == 0 {
		return "robot"
	}
	return string(out)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Event ids are ULIDs from one monotonic source, so ids made in the same
// millisecond still sort in creation order.
var (
	ulidMu      sync.Mutex
	ulidEntropy io.Reader = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a new ULID string.
func NewID() string {
	ulidMu.Lock()
	defer ulidMu.Unlock()
	return ulid.MustNew(ulid.Timestamp(time.Now()), ulidEntropy).String()
}
