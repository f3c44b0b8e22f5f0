package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "validate",
		args:    "[FILE...]",
		summary: "check events against the contract, naming each broken field",
		help: "Validates one event per FILE (standard input without FILE, or for -) and\n" +
			"prints each broken rule with its field. Exits 1 when any event is invalid.\n" +
			"With --json prints {\"total\", \"invalid\", \"results\": [{\"input\", \"ok\", \"type\",\n" +
			"\"robot\", \"session\", \"seq\", \"errors\": [{\"path\", \"message\"}]}]}.",
		define: defineValidate,
	})
}

// stdin is where validate reads when given no file; tests replace it.
var stdin io.Reader = os.Stdin

// maxLine bounds one line in --lines mode: a valid payload is at most
// protocol.MaxPayload bytes, so a longer line is reported, not buffered.
const maxLine = protocol.MaxPayload + 1

// validateReport is `validate --json`.
type validateReport struct {
	Total   int              `json:"total"`
	Invalid int              `json:"invalid"`
	Results []validateResult `json:"results"`
}

// validateResult is the verdict on one input.
type validateResult struct {
	Input   string          `json:"input"` // FILE, FILE:LINE or <stdin>
	OK      bool            `json:"ok"`
	Type    string          `json:"type,omitempty"`
	Robot   string          `json:"robot,omitempty"`
	Session string          `json:"session,omitempty"`
	Seq     int64           `json:"seq,omitempty"`
	Errors  []validateError `json:"errors,omitempty"`
}

// validateError is one broken rule; path is empty when the input is not an event at all.
type validateError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func defineValidate(fs *flag.FlagSet) runFunc {
	topic := fs.String("topic", "", "also check that the event belongs on this MQTT topic")
	prefix := fs.String("prefix", "", "topic prefix for --topic (env FLEETCTL_TOPIC_PREFIX; default "+protocol.DefaultPrefix+")")
	lines := fs.Bool("lines", false, "each line of the input is one event (e.g. from mosquitto_sub)")
	quiet := fs.Bool("q", false, "print only invalid events")
	asJSON := fs.Bool("json", false, "print one JSON report instead of lines")
	return func(_ context.Context, files []string, stdout, _ io.Writer) error {
		var tp *protocol.Topic
		if *topic != "" {
			p := *prefix
			if p == "" {
				p = os.Getenv("FLEETCTL_TOPIC_PREFIX")
			}
			topics, err := protocol.NewTopics(p)
			if err != nil {
				return fmt.Errorf("%w: --prefix: %v", errUsage, err)
			}
			t, err := topics.Parse(*topic)
			if err != nil {
				return fmt.Errorf("%w: --topic: %v", errUsage, err)
			}
			tp = &t
		}
		if len(files) == 0 {
			files = []string{"-"}
		}
		v := validation{out: stdout, topic: tp, quiet: *quiet, json: *asJSON}
		for _, name := range files {
			if err := v.file(name, *lines); err != nil {
				return err
			}
		}
		if *asJSON {
			rep := validateReport{Total: v.total, Invalid: v.bad, Results: v.results}
			if rep.Results == nil {
				rep.Results = []validateResult{}
			}
			if err := writeJSON(stdout, rep); err != nil {
				return err
			}
		}
		if v.bad > 0 {
			return fmt.Errorf("%w: %d of %d", errInvalidEvents, v.bad, v.total)
		}
		return nil
	}
}

// validation checks inputs and counts the results.
type validation struct {
	out        io.Writer
	topic      *protocol.Topic
	quiet      bool
	json       bool             // collect results instead of printing lines
	results    []validateResult // with json
	total, bad int
}

func (v *validation) file(name string, lines bool) error {
	var r io.Reader = stdin
	label := "<stdin>"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("validate: %w", err)
		}
		defer f.Close()
		r, label = f, name
	}
	if !lines {
		// One event: read at most one byte past the limit, enough to say "too large".
		b, err := io.ReadAll(io.LimitReader(r, protocol.MaxPayload+1))
		if err != nil {
			return fmt.Errorf("validate: read %s: %w", label, err)
		}
		v.check(label, bytes.TrimSpace(b))
		return nil
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		v.check(fmt.Sprintf("%s:%d", label, n), line)
	}
	if err := sc.Err(); err != nil {
		v.total++
		v.bad++
		msg := fmt.Sprintf("%v (line longer than %d bytes)", err, protocol.MaxPayload)
		if v.json {
			v.results = append(v.results, validateResult{Input: fmt.Sprintf("%s:%d", label, n+1), Errors: []validateError{{Path: "payload", Message: msg}}})
			return nil
		}
		fmt.Fprintf(v.out, "%s: INVALID payload: %s\n", clean(fmt.Sprintf("%s:%d", label, n+1)), msg)
	}
	return nil
}

// check validates one payload and records the verdict: one line when
// valid, one line per broken rule when not (cleaned: the input is foreign).
func (v *validation) check(label string, payload []byte) {
	v.total++
	ev, err := protocol.Decode(payload)
	if err == nil && v.topic != nil {
		err = v.topic.Matches(ev)
	}
	res := validateResult{Input: label, OK: err == nil}
	if err == nil {
		res.Type, res.Robot, res.Session, res.Seq = ev.Type, ev.Robot, ev.Session, ev.Seq
	} else {
		v.bad++
		var ve *protocol.ValidationError
		if errors.As(err, &ve) {
			for _, f := range ve.Fields {
				res.Errors = append(res.Errors, validateError{Path: f.Path, Message: f.Msg})
			}
		} else {
			res.Errors = []validateError{{Message: err.Error()}}
		}
	}
	if v.json {
		v.results = append(v.results, res)
		return
	}
	switch {
	case res.OK && !v.quiet:
		where := ev.Robot
		if ev.Session != "" {
			where += "/" + ev.Session
		}
		fmt.Fprintln(v.out, cleanf("%s: ok: %s from %s, seq %d", label, ev.Type, where, ev.Seq))
	case !res.OK:
		for _, e := range res.Errors {
			if e.Path == "" {
				fmt.Fprintln(v.out, cleanf("%s: INVALID %s", label, e.Message))
			} else {
				fmt.Fprintln(v.out, cleanf("%s: INVALID %s: %s", label, e.Path, e.Message))
			}
		}
	}
}
