package protocol

import (
	"bytes"
	"fmt"
	"time"
)

// TimeLayout is the wire form of every timestamp: RFC 3339, UTC, milliseconds.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// Time is a timestamp that encodes as TimeLayout. Decoding accepts any
// RFC 3339 time (receivers are lenient, senders exact).
type Time struct{ time.Time }

// Now returns the current time truncated to the wire's millisecond precision.
func Now() Time { return Time{time.Now().UTC().Truncate(time.Millisecond)} }

// T wraps t as a Time.
func T(t time.Time) Time { return Time{t.UTC()} }

// TimePtr returns a pointer to T(t), for nullable fields.
func TimePtr(t time.Time) *Time { v := T(t); return &v }

// String returns the wire form.
func (t Time) String() string { return t.UTC().Format(TimeLayout) }

// MarshalJSON encodes t in TimeLayout.
func (t Time) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(TimeLayout)+2)
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, TimeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON accepts an RFC 3339 string.
func (t *Time) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("time must be an RFC 3339 string, got %s", b)
	}
	v, err := parseWireTime(string(b[1 : len(b)-1]))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// parseWireTime parses an RFC 3339 time as receivers read it: in UTC,
// truncated to the wire's millisecond precision (so a decoded event encodes
// and decodes to the same value), and within years 0000-9999 once in UTC
// (9999-12-31T23:59:59-01:00 is not: it could not be written back).
func parseWireTime(s string) (Time, error) {
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Time{}, fmt.Errorf("time must be RFC 3339: %w", err)
	}
	v = v.UTC().Truncate(time.Millisecond)
	if y := v.Year(); y < 0 || y > 9999 {
		return Time{}, errTimeRange
	}
	return Time{v}, nil
}

// parseTime checks s is an RFC 3339 time a receiver accepts.
func parseTime(s string) error {
	_, err := parseWireTime(s)
	return err
}
