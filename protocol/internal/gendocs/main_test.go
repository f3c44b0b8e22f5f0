package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/robotfleet/fleetlink/protocol"
)

func TestRunWritesArtefacts(t *testing.T) {
	dir := t.TempDir()
	doc := filepath.Join(dir, "PROTOCOL.md")
	if err := run(filepath.Join(dir, "schema"), doc); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(doc)
	if err != nil || !bytes.Equal(got, protocol.RenderDocs()) {
		t.Fatalf("doc differs from RenderDocs (%v)", err)
	}
	for name, want := range protocol.SchemaFiles() {
		got, err := os.ReadFile(filepath.Join(dir, "schema", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("schema %s differs (%v)", name, err)
		}
	}
	if err := run(filepath.Join(dir, "schema"), filepath.Join(dir, "missing", "x.md")); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}
