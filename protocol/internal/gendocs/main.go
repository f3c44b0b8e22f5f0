// The gendocs command writes the generated artefacts of the protocol
// package: the JSON Schemas and docs/PROTOCOL.md. `go generate ./protocol`
// runs it; a test in protocol fails when the checked-in files are stale.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/robotfleet/fleetlink/protocol"
)

func main() {
	schemaDir := flag.String("schema", "schema", "directory for the JSON Schemas")
	doc := flag.String("doc", "../docs/PROTOCOL.md", "path of the generated reference document")
	flag.Parse()
	if err := run(*schemaDir, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(schemaDir, doc string) error {
	if err := protocol.WriteSchemas(schemaDir); err != nil {
		return err
	}
	if err := os.WriteFile(doc, protocol.RenderDocs(), 0o644); err != nil {
		return fmt.Errorf("write doc: %w", err)
	}
	return nil
}
