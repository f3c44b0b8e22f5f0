package protocol

import (
	"encoding/json"
	"testing"
)

func TestExamplesValidate(t *testing.T) {
	for _, info := range Catalog() {
		t.Run(info.Type, func(t *testing.T) {
			ev := info.Example()
			b, err := Encode(ev)
			if err != nil {
				t.Fatalf("example does not validate: %v", err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("decode example: %v", err)
			}
			if got.Type != info.Type || got.Data.EventType() != info.Type {
				t.Fatalf("decoded type %q / %q", got.Type, got.Data.EventType())
			}
			again, _ := json.Marshal(got)
			if string(again) != string(b) {
				t.Fatalf("round trip differs:\n%s\n%s", b, again)
			}
		})
	}
}
