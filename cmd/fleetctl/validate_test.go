package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// TestValidateFixtures: every golden fixture gets the verdict the protocol
// package expects, with invalid ones naming the field in the output.
func TestValidateFixtures(t *testing.T) {
	for _, f := range protocol.Fixtures() {
		t.Run(f.Name, func(t *testing.T) {
			p := writeFile(t, "event.json", f.Payload)
			code, out, errOut := runFleetctl(t, "validate", p)
			if f.Valid() {
				require.Equal(t, 0, code, out+errOut)
				require.Contains(t, out, p+": ok: "+f.Type)
				return
			}
			require.Equal(t, 1, code, out+errOut)
			// The output has one line per broken rule; the fixture's message is
			// one or more of them, "; "-joined.
			for _, part := range strings.Split(f.Err, "; ") {
				path, msg, found := strings.Cut(part, ": ")
				if found && !strings.Contains(path, " ") {
					require.Contains(t, out, "INVALID "+path+": "+msg)
				} else {
					require.Contains(t, out, part)
				}
			}
			require.Contains(t, errOut, "invalid events: 1 of 1")
		})
	}
}

func TestValidateStdinAndTopic(t *testing.T) {
	progress, err := protocol.ExampleJSON(protocol.TypeSessionProgress)
	require.NoError(t, err)
	tests := []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"stdin valid", []string{"validate"}, 0, []string{"<stdin>: ok: session.progress from r-001/s-7f3a, seq 1742"}},
		{"dash is stdin", []string{"validate", "-"}, 0, []string{"<stdin>: ok:"}},
		{"right topic", []string{"validate", "--topic", "fleet/v1/robots/r-001/sessions/s-7f3a/events"}, 0, []string{"ok: session.progress"}},
		{"custom prefix", []string{"validate", "--prefix", "acme", "--topic", "acme/v1/robots/r-001/sessions/s-7f3a/events"}, 0, []string{"ok:"}},
		{"other robot's topic", []string{"validate", "--topic", "fleet/v1/robots/r-002/sessions/s-7f3a/events"}, 1,
			[]string{`INVALID invalid topic: envelope robot "r-001" differs from topic robot "r-002"`}},
		{"other session's topic", []string{"validate", "--topic", "fleet/v1/robots/r-001/sessions/s-9/events"}, 1,
			[]string{`envelope session "s-7f3a" differs from topic session "s-9"`}},
		{"wrong kind", []string{"validate", "--topic", "fleet/v1/robots/r-001/sessions/s-7f3a/state"}, 1,
			[]string{`type "session.progress" does not belong on a "state" topic`}},
		{"bad topic", []string{"validate", "--topic", "fleet/v1/robots/r-001/logs"}, 2, nil},
		{"quiet", []string{"validate", "-q"}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin = strings.NewReader(string(progress))
			t.Cleanup(func() { stdin = os.Stdin })
			code, out, errOut := runFleetctl(t, tt.args...)
			require.Equal(t, tt.code, code, out+errOut)
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
			if tt.name == "quiet" {
				require.Empty(t, out)
			}
		})
	}
}

func TestValidateLines(t *testing.T) {
	var in strings.Builder
	for _, f := range protocol.Fixtures() {
		if f.Name == "example/session.progress" || f.Name == "data/out-of-range" || f.Name == "envelope/unknown-type" {
			in.Write(f.Payload)
			in.WriteString("\n\n")
		}
	}
	p := writeFile(t, "events.ndjson", []byte(in.String()))
	code, out, errOut := runFleetctl(t, "validate", "--lines", p)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "invalid events: 2 of 3")
	require.Contains(t, out, p+":1: ok: session.progress")
	require.Contains(t, out, "INVALID data.percent: must be between 0 and 100, got 140")
	require.Contains(t, out, `INVALID type: unknown event type "session.paused"`)
}

func TestValidateFileErrors(t *testing.T) {
	code, _, errOut := runFleetctl(t, "validate", filepath.Join(t.TempDir(), "missing.json"))
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no such file")
}
