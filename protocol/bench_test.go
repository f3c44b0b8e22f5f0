package protocol

import (
	"encoding/json"
	"testing"
)

// BenchmarkDecode measures what the relay pays per message: decoding and
// validating one session.progress payload (~300 B).
func BenchmarkDecode(b *testing.B) {
	info, _ := Lookup(TypeSessionProgress)
	payload, err := Encode(info.Example())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeUnvalidated is the peer: encoding/json alone into the typed
// event, no validation at all — the floor Decode is measured against.
func BenchmarkDecodeUnvalidated(b *testing.B) {
	info, _ := Lookup(TypeSessionProgress)
	payload, err := Encode(info.Example())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var ev struct {
			Event
			Data SessionProgress `json:"data"`
		}
		if err := json.Unmarshal(payload, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode measures what the agent pays per event: validation and
// encoding of one session.progress.
func BenchmarkEncode(b *testing.B) {
	ev := catalogByType[TypeSessionProgress].Example()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(ev); err != nil {
			b.Fatal(err)
		}
	}
}
