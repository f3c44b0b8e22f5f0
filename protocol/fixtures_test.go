package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestFixtures(t *testing.T) {
	names := map[string]bool{}
	for _, f := range Fixtures() {
		t.Run(f.Name, func(t *testing.T) {
			if names[f.Name] {
				t.Fatalf("duplicate fixture name")
			}
			names[f.Name] = true
			ev, err := Decode(f.Payload)
			if f.Valid() {
				if err != nil {
					t.Fatalf("valid fixture fails: %v\n%s", err, f.Payload)
				}
				if ev.Type != f.Type {
					t.Fatalf("type %q, fixture says %q", ev.Type, f.Type)
				}
				assertRoundTrip(t, ev)
				if err := ValidateEvent(f.Payload); err != nil {
					t.Fatalf("ValidateEvent: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("invalid fixture decodes: %s", f.Payload)
			}
			if !strings.Contains(err.Error(), f.Err) {
				t.Fatalf("error %q\ndoes not contain %q", err, f.Err)
			}
			if !errors.Is(err, f.Is) {
				t.Fatalf("error %q does not wrap %v", err, f.Is)
			}
			if errors.Is(f.Is, ErrInvalid) {
				var ve *ValidationError
				if !errors.As(err, &ve) || len(ve.Fields) == 0 || ve.Fields[0].Path == "" {
					t.Fatalf("error %q names no field", err)
				}
			}
		})
	}
}

// TestFixturesCoverEveryType: every type has a valid fixture and at least
// one invalid one.
func TestFixturesCoverEveryType(t *testing.T) {
	valid, invalid := map[string]int{}, map[string]int{}
	for _, f := range Fixtures() {
		if f.Valid() {
			valid[f.Type]++
		} else {
			invalid[f.Type]++
		}
	}
	for _, typ := range Types() {
		if valid[typ] == 0 || invalid[typ] == 0 {
			t.Errorf("%s: %d valid and %d invalid fixtures, want at least one of each", typ, valid[typ], invalid[typ])
		}
	}
	if n := len(InvalidFixtures()); n < 50 {
		t.Errorf("only %d invalid fixtures", n)
	}
	if f, ok := FixtureNamed("data/out-of-range"); !ok || f.Valid() {
		t.Errorf("FixtureNamed: %+v %v", f, ok)
	}
	if _, ok := FixtureNamed("nope"); ok {
		t.Errorf("FixtureNamed(nope) found")
	}
	if len(ValidFixtures())+len(InvalidFixtures()) != len(Fixtures()) {
		t.Errorf("ValidFixtures and InvalidFixtures do not partition Fixtures()")
	}
}

// assertRoundTrip checks that ev encodes, and decodes again to an equal event.
func assertRoundTrip(t testing.TB, ev *Event) {
	t.Helper()
	b, err := Encode(ev)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	again, err := Decode(b)
	if err != nil {
		t.Fatalf("decode re-encoded %s: %v", b, err)
	}
	if !reflect.DeepEqual(ev, again) {
		t.Fatalf("round trip differs:\n%#v\n%#v", ev, again)
	}
}

func TestDecodeKeysAreCaseSensitive(t *testing.T) {
	p := mutated(TypeSessionProgress, set("data.percent", 50), set("data.PERCENT", 500), set("data.Percent", 600), set("TYPE", "robot.status"), set("Robot", "x"))
	ev, err := Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	d := ev.Data.(SessionProgress)
	if d.Percent != 50 || ev.Type != TypeSessionProgress || ev.Robot != "r-001" {
		t.Fatalf("decoded percent %v, type %q, robot %q: an inexact key was used", d.Percent, ev.Type, ev.Robot)
	}
}

func TestDecodeAnyValuesAreEncodingJSONTypes(t *testing.T) {
	p := mutated(TypeCommand, set("data.args", map[string]any{"n": 8, "f": 0.5, "list": []any{1, "a"}, "obj": map[string]any{"x": 2}}))
	ev, err := Decode(p)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	var raw struct {
		Data struct {
			Args map[string]any `json:"args"`
		} `json:"data"`
	}
	if err := json.Unmarshal(p, &raw); err != nil {
		t.Fatal(err)
	}
	want = raw.Data.Args
	if got := ev.Data.(Command).Args; !reflect.DeepEqual(got, want) {
		t.Fatalf("args %#v, encoding/json gives %#v", got, want)
	}
}

func TestDecodeTimes(t *testing.T) {
	tests := []struct {
		ts, want string
	}{
		{"2026-11-25T21:30:00.123Z", "2026-11-25T21:30:00.123Z"},
		{"2026-11-25T21:30:00Z", "2026-11-25T21:30:00.000Z"},
		{"2026-11-25T22:30:00.123999+01:00", "2026-11-25T21:30:00.123Z"}, // truncated, not rounded
		{"0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.ts, func(t *testing.T) {
			ev, err := Decode(mutated(TypeSessionProgress, set("ts", tt.ts)))
			if err != nil {
				t.Fatal(err)
			}
			if got := ev.TS.String(); got != tt.want {
				t.Fatalf("ts %s, want %s", got, tt.want)
			}
			assertRoundTrip(t, ev)
		})
	}
}

func TestDecodeIntOverflow(t *testing.T) {
	// position is a Go int: a value beyond int64 is an error naming it, not a wrap.
	_, err := Decode(mutated(TypeSessionQueued, set("data.position", json.Number("99999999999999999999"))))
	if err == nil || !strings.Contains(err.Error(), "data.position:") {
		t.Fatalf("got %v", err)
	}
}
