package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register("schema", command{summary: "list the event types, or print one's JSON Schema and example", run: runSchema})
}

func runSchema(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetctl schema [TYPE]\n\nWithout TYPE lists the event types; with TYPE prints its JSON Schema\n(draft 2020-12) and an example that validates.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	only := fs.String("only", "", "print only the schema or only the example: schema|example")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 1:
		return fmt.Errorf("%w: at most one TYPE, got %q", errUsage, pos)
	case *only != "" && *only != "schema" && *only != "example":
		return fmt.Errorf("%w: --only must be schema or example, got %q", errUsage, *only)
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
	if *only != "example" {
		if *only == "" {
			fmt.Fprintf(stdout, "# %s: %s\n# JSON Schema (draft 2020-12):\n", info.Type, info.Description)
		}
		if _, err := stdout.Write(info.Schema()); err != nil {
			return err
		}
	}
	if *only != "schema" {
		ex, err := protocol.ExampleJSON(info.Type)
		if err != nil {
			return err
		}
		if *only == "" {
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
