package session

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// argvPipeline records its argv (one per line) in <output_dir>/argv.
func argvPipeline() Pipeline {
	return Pipeline{Name: "argv", Runner: RunnerExec,
		Command: []string{"/bin/sh", "-c", `printf '%s\n' "$@" > "$0/argv"`, "{output_dir}", "{param.name}", "--label={param.label}", "{param.offset}"},
		Params: []Param{
			{Name: "name", Type: ParamString},
			{Name: "label", Type: ParamString, Pattern: "[a-z0-9_]{1,32}"},
			{Name: "offset", Type: ParamString, AllowLeadingDash: true, Pattern: "-?[0-9]+"},
			{Name: "note", Type: ParamString}, // not in argv: any text
		}}
}

// Issue 9 item 16: a string param that lands in the argv cannot smuggle an
// option in, and a pattern bounds what a param may hold.
func TestArgvParamAttacksRefused(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Pipelines = append(c.Pipelines, argvPipeline()) })
	for _, tc := range []struct {
		name   string
		params map[string]any
		msg    string
	}{
		{"option injection", map[string]any{"name": "--output=/etc/x"}, `param "name": must not start with "-"`},
		{"short option", map[string]any{"name": "-rf"}, `param "name": must not start with "-"`},
		{"leading dash inside a template arg", map[string]any{"label": "-x"}, `param "label": must not start with "-"`},
		{"pattern", map[string]any{"label": "a b"}, `param "label": must match the pattern "[a-z0-9_]{1,32}", got "a b"`},
		{"pattern is anchored", map[string]any{"label": "ok/../../etc"}, `must match the pattern`},
		{"pattern with allowed dash", map[string]any{"offset": "-5x"}, `param "offset": must match the pattern "-?[0-9]+"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Start(StartRequest{Pipeline: "argv", Model: "model.onnx", Params: tc.params})
			require.ErrorIs(t, err, ErrInvalidParams)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	assert.Empty(t, e.m.List(), "a refused start left a session")

	// What the rules allow runs, each value one argv element.
	id := e.startSession(StartRequest{Pipeline: "argv", Model: "model.onnx",
		Params: map[string]any{"name": "plain", "label": "ok_1", "offset": "-5", "note": "-anything goes outside argv"}})
	require.Equal(t, protocol.TypeSessionCompleted, e.em.waitFinal(t, id, 10*time.Second).Type)
	b, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "output", "argv"))
	require.NoError(t, err)
	assert.Equal(t, "plain\n--label=ok_1\n-5\n", string(b))
}

func TestParamRuleConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		p   Param
		msg string
	}{
		{Param{Name: "n", Type: ParamInt, Pattern: "[0-9]+"}, "pattern: only string params take a pattern"},
		{Param{Name: "s", Type: ParamString, Pattern: "(["}, `pattern: "([" is not a Go regexp`},
		{Param{Name: "b", Type: ParamBool, AllowLeadingDash: true}, "allow_leading_dash: only string params take it"},
		{Param{Name: "d", Type: ParamString, Pattern: "[a-z]+", Default: "A"}, `default: must match the pattern "[a-z]+", got "A"`},
	} {
		err := tc.p.validate("sessions.pipelines[0].params[0]")
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.msg)
	}
}
