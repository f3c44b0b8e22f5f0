package session

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExpandArgv(t *testing.T) {
	job := &Job{SessionID: "s-1", ModelPath: "/m/a b.onnx", OutputDir: "/o",
		Params: map[string]any{"n": int64(1000000), "f": 0.5, "b": true, "s": "x y;rm -rf /"}}
	for _, tc := range []struct {
		name string
		tmpl []string
		want []string
	}{
		{"whole args", []string{"tool", "{model}", "{output_dir}", "{session_id}"}, []string{"tool", "/m/a b.onnx", "/o", "s-1"}},
		{"inside an arg", []string{"trtexec", "--onnx={model}", "--saveEngine={output_dir}/e.plan"}, []string{"trtexec", "--onnx=/m/a b.onnx", "--saveEngine=/o/e.plan"}},
		{"params", []string{"t", "{param.n}", "{param.f}", "{param.b}", "{param.s}"}, []string{"t", "1000000", "0.5", "true", "x y;rm -rf /"}},
		{"unset param arg dropped", []string{"t", "{param.none}", "--x={param.none}"}, []string{"t", "--x="}},
		{"no placeholders", []string{"t", "{other}", "{"}, []string{"t", "{other}", "{"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, expandArgv(tc.tmpl, job))
		})
	}
}

func TestParseProgress(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		pct  float64
	}{
		{`{"progress": 42.5, "stage": "s", "message": "m"}`, true, 42.5},
		{`  {"progress": 0}  `, true, 0},
		{`{"result": {"metrics": {"a": 1}}}`, true, 0},
		{`{"other": 1}`, false, 0},
		{`{"progress": "ten"}`, false, 0},
		{`progress 10`, false, 0},
		{`{broken`, false, 0},
	} {
		pl, ok := parseProgress([]byte(tc.line))
		assert.Equal(t, tc.ok, ok, tc.line)
		if ok && pl.Progress != nil {
			assert.Equal(t, tc.pct, *pl.Progress, tc.line)
		}
	}
}

func TestReadLinesBoundsLongLines(t *testing.T) {
	long := strings.Repeat("x", maxLine*3)
	in := "a\r\n" + long + "\nb\nlast-without-newline"
	type got struct {
		n   int
		cut bool
	}
	var lines []got
	var texts []string
	readLines(strings.NewReader(in), func(line []byte, cut bool) {
		lines = append(lines, got{len(line), cut})
		if !cut {
			texts = append(texts, string(line))
		}
	})
	require.Len(t, lines, 4)
	assert.Equal(t, got{maxLine, true}, lines[1])
	assert.Equal(t, []string{"a", "b", "last-without-newline"}, texts)
}

func TestTailKeepsEnd(t *testing.T) {
	tb := newTail(8)
	_, _ = tb.Write([]byte("hello "))
	_, _ = tb.Write([]byte("world"))
	assert.Equal(t, "lo world", tb.String())
	_, _ = tb.Write([]byte(strings.Repeat("z", 20) + "é"))
	assert.Equal(t, "zzzzzzé", tb.String())
	_, _ = tb.Write([]byte("abcdefg")) // cuts é in half: the broken byte is dropped
	assert.Equal(t, "abcdefg", tb.String())
}

func TestConfigRejectsUndeclaredPlaceholder(t *testing.T) {
	cfg := Config{Pipelines: []Pipeline{{Name: "p", Runner: RunnerExec, Command: []string{"t", "--x={param.missing}"}}}}
	cfg.FillDefaults(t.TempDir())
	err := cfg.Validate()
	require.Error(t, err)
	assert.Equal(t, "sessions.pipelines[0] (p).command[1]: placeholder {param.missing} names no declared param", err.Error())
}
