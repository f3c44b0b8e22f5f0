package ratelog_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/ratelog"
)

func TestRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := ratelog.New(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for range 100 {
		l.Warn("slow", "closing slow consumer")
	}
	l.Warn("other", "another")
	require.Equal(t, 2, strings.Count(buf.String(), "\n"))
	require.Equal(t, int64(99), l.Suppressed())
	time.Sleep(60 * time.Millisecond)
	l.Warn("slow", "closing slow consumer")
	require.Contains(t, buf.String(), "suppressed=99")
}
