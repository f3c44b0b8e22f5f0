package protocol

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// compileSchemas compiles every published schema with an independent
// validator (santhosh-tekuri/jsonschema), formats asserted.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files := SchemaFiles()
	for name, b := range files {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := c.AddResource(SchemaBaseURI+name, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for name := range files {
		s, err := c.Compile(SchemaBaseURI + name)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func schemaValidate(s *jsonschema.Schema, payload []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

func TestExamplesValidateAgainstSchemas(t *testing.T) {
	schemas := compileSchemas(t)
	for _, info := range Catalog() {
		t.Run(info.Type, func(t *testing.T) {
			b, err := ExampleJSON(info.Type)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemaValidate(schemas[SchemaFile(info.Type)], b); err != nil {
				t.Fatalf("example fails its schema: %v", err)
			}
			if err := schemaValidate(schemas[EventSchemaFile], b); err != nil {
				t.Fatalf("example fails %s: %v", EventSchemaFile, err)
			}
		})
	}
}

// TestFixturesAgreeWithSchemas keeps the Go validator and the published
// schemas from drifting apart: valid fixtures pass the schemas, invalid ones
// fail them unless their rule is one JSON Schema cannot express (GoOnly).
func TestFixturesAgreeWithSchemas(t *testing.T) {
	schemas := compileSchemas(t)
	for _, f := range Fixtures() {
		t.Run(f.Name, func(t *testing.T) {
			err := schemaValidate(schemas[EventSchemaFile], f.Payload)
			if f.Type != "" {
				if terr := schemaValidate(schemas[SchemaFile(f.Type)], f.Payload); (terr == nil) != (err == nil) {
					t.Fatalf("%s says %v, %s says %v", EventSchemaFile, err, SchemaFile(f.Type), terr)
				}
			}
			switch {
			case f.Valid() && err != nil:
				t.Fatalf("valid fixture fails the schema: %v", err)
			case !f.Valid() && !f.GoOnly && err == nil:
				t.Fatalf("invalid fixture (%s) passes the schema; mark it GoOnly if the schema cannot express the rule", f.Err)
			case f.GoOnly && err != nil && f.Is == ErrInvalid:
				t.Fatalf("GoOnly fixture fails the schema too (%v): drop GoOnly", err)
			}
		})
	}
}

// TestGeneratedFilesUpToDate fails when protocol/schema or docs/PROTOCOL.md
// differ from what the code renders. Run `go generate ./protocol`.
func TestGeneratedFilesUpToDate(t *testing.T) {
	files := SchemaFiles()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("schema", name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("schema/%s is out of date (%v): run go generate ./protocol", name, err)
		}
	}
	onDisk, _ := filepath.Glob(filepath.Join("schema", "*.json"))
	for _, p := range onDisk {
		if _, ok := files[filepath.Base(p)]; !ok {
			t.Errorf("%s is not a published schema: run go generate ./protocol", p)
		}
	}
	got, err := os.ReadFile(filepath.Join("..", "docs", "PROTOCOL.md"))
	if err != nil || !bytes.Equal(got, RenderDocs()) {
		t.Errorf("docs/PROTOCOL.md is out of date (%v): run go generate ./protocol", err)
	}
}

func TestWriteSchemasRemovesStale(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "session.paused.json")
	if err := os.WriteFile(stale, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSchemas(dir); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(names) != len(Types())+1 || slices.Contains(names, stale) {
		t.Fatalf("files after WriteSchemas: %v", names)
	}
}
