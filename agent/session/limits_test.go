package session

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

func TestOutputAndLogCaps(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxOutputBytes = 4096
		c.MaxLogBytes = 2048
		c.Pipelines = append(c.Pipelines, Pipeline{Name: "writer", Runner: RunnerExec,
			Command: []string{testdata(t, "writer.sh"), "{output_dir}", "{param.bytes}"},
			Params:  []Param{{Name: "bytes", Type: ParamInt, Required: true}}})
	})
	for _, tc := range []struct {
		name   string
		bytes  float64
		status string
	}{
		{"under the cap", 1000, protocol.TypeSessionCompleted},
		{"over the cap", 10000, protocol.TypeSessionFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := e.startSession(StartRequest{Pipeline: "writer", Params: map[string]any{"bytes": tc.bytes}})
			fin := e.em.waitFinal(t, id, 10*time.Second)
			require.Equal(t, tc.status, fin.Type, "%+v", fin.Data)
			if f, ok := fin.Data.(protocol.SessionFailed); ok {
				assert.Equal(t, protocol.FailRunnerError, f.Error.Code)
				assert.Contains(t, f.Error.Message, "max_output_bytes")
			}
			log, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "session.log"))
			require.NoError(t, err)
			assert.LessOrEqual(t, len(log), 2048+64)
			assert.True(t, strings.Contains(string(log), "[session log truncated at 2048 bytes]"))
		})
	}
}

func TestCappedLogWritesNeverFail(t *testing.T) {
	l, err := openLog(filepath.Join(t.TempDir(), "log"), 10)
	require.NoError(t, err)
	for _, s := range []string{"12345", "67890abc", "more"} {
		n, err := l.Write([]byte(s))
		require.NoError(t, err)
		assert.Equal(t, len(s), n)
	}
	require.NoError(t, l.Close())
	n, err := l.Write([]byte("after close"))
	require.NoError(t, err)
	assert.Equal(t, 11, n)
}
