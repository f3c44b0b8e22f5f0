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
	register("validate", command{summary: "check events against the contract, naming each broken field", run: runValidate})
}

// stdin is where validate reads when given no file; tests replace it.
var stdin io.Reader = os.Stdin

// maxLine bounds one line in --lines mode: a valid payload is at most
// protocol.MaxPayload bytes, so a longer line is reported, not buffered.
const maxLine = protocol.MaxPayload + 1

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetctl validate [flags] [FILE...]\n\nValidates one event per FILE (standard input without FILE, or for -) and\nprints each broken rule with its field. Exits 1 when any event is invalid.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	topic := fs.String("topic", "", "also check that the event belongs on this MQTT topic")
	prefix := fs.String("prefix", envOr("FLEETCTL_TOPIC_PREFIX", protocol.DefaultPrefix), "topic prefix for --topic (env FLEETCTL_TOPIC_PREFIX)")
	lines := fs.Bool("lines", false, "each line of the input is one event (e.g. from mosquitto_sub)")
	quiet := fs.Bool("q", false, "print only invalid events")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	var tp *protocol.Topic
	if *topic != "" {
		topics, err := protocol.NewTopics(*prefix)
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
	v := validation{out: stdout, topic: tp, quiet: *quiet}
	for _, name := range files {
		if err := v.file(name, *lines); err != nil {
			return err
		}
	}
	if v.bad > 0 {
		return fmt.Errorf("%w: %d of %d", errInvalidEvents, v.bad, v.total)
	}
	return nil
}

// validation checks inputs and counts the results.
type validation struct {
	out        io.Writer
	topic      *protocol.Topic
	quiet      bool
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
		fmt.Fprintf(v.out, "%s:%d: INVALID payload: %v (line longer than %d bytes)\n", label, n+1, err, protocol.MaxPayload)
	}
	return nil
}

// check validates one payload and prints the verdict: one line when valid,
// one line per broken rule when not.
func (v *validation) check(label string, payload []byte) {
	v.total++
	ev, err := protocol.Decode(payload)
	if err == nil && v.topic != nil {
		err = v.topic.Matches(ev)
	}
	if err == nil {
		if !v.quiet {
			where := ev.Robot
			if ev.Session != "" {
				where += "/" + ev.Session
			}
			fmt.Fprintf(v.out, "%s: ok: %s from %s, seq %d\n", label, ev.Type, where, ev.Seq)
		}
		return
	}
	v.bad++
	var ve *protocol.ValidationError
	if errors.As(err, &ve) {
		for _, f := range ve.Fields {
			fmt.Fprintf(v.out, "%s: INVALID %s: %s\n", label, f.Path, f.Msg)
		}
		return
	}
	fmt.Fprintf(v.out, "%s: INVALID %v\n", label, err)
}
