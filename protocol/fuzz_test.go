package protocol

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics; every error wraps a sentinel; a decoded
// event validates, re-encodes, and decodes again to an equal event, whose
// encoding is then stable byte for byte.
func FuzzDecode(f *testing.F) {
	for _, fx := range Fixtures() {
		if len(fx.Payload) < 4096 {
			f.Add(fx.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := Decode(payload)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded event does not validate: %v\n%s", err, payload)
		}
		if v, ok := ev.Data.(interface{ Validate() error }); !ok {
			t.Fatalf("%T has no Validate", ev.Data)
		} else if err := v.Validate(); err != nil {
			t.Fatalf("data of a valid event does not validate: %v", err)
		}
		b, err := Encode(ev)
		if err != nil {
			t.Fatalf("re-encode: %v\n%s", err, payload)
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("decode re-encoded: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(ev, again) {
			t.Fatalf("round trip differs:\n%#v\n%#v", ev, again)
		}
		b2, err := Encode(again)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("encoding not stable (%v):\n%s\n%s", err, b, b2)
		}
		if _, err := (Topics{}).For(ev); err != nil && ev.Type != TypeSystemStatus {
			t.Fatalf("no topic for a valid event: %v", err)
		}
	})
}
