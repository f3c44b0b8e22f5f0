package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "schema",
		args:    "[TYPE]",
		summary: "list the event types, or print one's JSON Schema and example",
		help: "Without TYPE lists the event types; with TYPE prints its JSON Schema\n" +
			"(draft 2020-12) and an example that validates. With --json the list is a JSON\n" +
			"array and TYPE gives {\"type\", \"schema\", \"example\"}.",
		define: defineSchema,
	})
}

// schemaEntry is one event type in `schema --json`.
type schemaEntry struct {
	Type        string `json:"type"`
	Topic       string `json:"topic,omitempty"` // with {r} and {s}; empty for WebSocket-only types
	QoS         *byte  `json:"qos,omitempty"`
	Retained    *bool  `json:"retained,omitempty"`
	Direction   string `json:"direction"`
	Description string `json:"description"`
}

// schemaDoc is `schema --json TYPE`.
type schemaDoc struct {
	Type    string          `json:"type"`
	Schema  json.RawMessage `json:"schema"`
	Example json.RawMessage `json:"example"`
}

func defineSchema(fs *flag.FlagSet) runFunc {
	only := fs.String("only", "", "print only the schema or only the example: schema|example")
	asJSON := fs.Bool("json", false, "print one JSON document (a list without TYPE)")
	return func(_ context.Context, pos []string, stdout, _ io.Writer) error {
		return runSchema(pos, *only, *asJSON, stdout)
	}
}

func runSchema(pos []string, only string, asJSON bool, stdout io.Writer) error {
	switch {
	case len(pos) == 0 && asJSON:
		list := []schemaEntry{}
		for _, t := range protocol.Catalog() {
			e := schemaEntry{Type: t.Type, Topic: t.Topic(), Direction: t.Direction, Description: t.Description}
			if e.Topic != "" {
				e.QoS, e.Retained = &t.QoS, &t.Retained
			}
			list = append(list, e)
		}
		return writeJSON(stdout, list)
	case len(pos) > 1:
		return fmt.Errorf("%w: at most one TYPE, got %q", errUsage, pos)
	case only != "" && only != "schema" && only != "example":
		return fmt.Errorf("%w: --only must be schema or example, got %q", errUsage, only)
	case len(pos) == 0:
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TYPE\tTOPIC\tQOS\tRETAINED\tDESCRIPTION")
		for _, t := range protocol.Catalog() {
			topic, qos, retained := t.Topic(), fmt.Sprint(t.QoS), fmt.Sprint(t.Retained)
			if topic == "" {
				topic, qos, retained = "(WebSocket only, "+t.Direction+")", "-", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Type, topic, qos, retained, firstSentence(t.Description))
		}
		return tw.Flush()
	}
	info, ok := protocol.Lookup(pos[0])
	if !ok {
		return fmt.Errorf("unknown event type %q (known: %s)", pos[0], strings.Join(protocol.Types(), ", "))
	}
	if asJSON && only == "" {
		ex, err := protocol.ExampleJSON(info.Type)
		if err != nil {
			return err
		}
		return writeJSON(stdout, schemaDoc{Type: info.Type, Schema: info.Schema(), Example: ex})
	}
	if only != "example" {
		if only == "" {
			fmt.Fprintf(stdout, "# %s: %s\n# JSON Schema (draft 2020-12):\n", info.Type, info.Description)
		}
		if _, err := stdout.Write(info.Schema()); err != nil {
			return err
		}
	}
	if only != "schema" {
		ex, err := protocol.ExampleJSON(info.Type)
		if err != nil {
			return err
		}
		if only == "" {
			fmt.Fprintf(stdout, "\n# Example:\n")
		}
		fmt.Fprintf(stdout, "%s\n", ex)
	}
	return nil
}

// firstSentence returns s up to the first ". " that is followed by a
// capital letter (so "e.g. that" does not end it), without the period.
func firstSentence(s string) string {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '.' && s[i+1] == ' ' && s[i+2] >= 'A' && s[i+2] <= 'Z' {
			return s[:i]
		}
	}
	return strings.TrimSuffix(s, ".")
}
