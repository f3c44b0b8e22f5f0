package protocol

import "testing"

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
