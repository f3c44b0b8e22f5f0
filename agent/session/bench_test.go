package session

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkSessionExecTrue measures one whole session (journal writes,
// events, process start, artifact scan) around a child that does nothing.
func BenchmarkSessionExecTrue(b *testing.B) {
	e := newEnv(b, func(c *Config) {
		c.Pipelines = append(c.Pipelines, Pipeline{Name: "true", Runner: RunnerExec, Command: []string{"true"}})
		c.Retain = 10
	})
	b.ResetTimer()
	for range b.N {
		id := e.startSession(StartRequest{Pipeline: "true"})
		for e.em.final(id) == nil {
			select {
			case <-e.em.notify:
			case <-time.After(10 * time.Second):
				b.Fatal("session did not finish")
			}
		}
	}
}

// BenchmarkProgressEmit measures the cost of one runner progress update
// reaching the manager (most are coalesced by the 250 ms throttle).
func BenchmarkProgressEmit(b *testing.B) {
	e := newEnv(b, nil)
	s := &sess{rec: &record{ID: "s-bench", Pipeline: "p", Model: "m", Status: "running", CreatedAt: time.Now()}, started: time.Now(), done: make(chan struct{})}
	b.ResetTimer()
	for i := range b.N {
		e.m.progress(s, Update{Percent: float64(i%100) + 0.5, Stage: "s", Message: "m"})
	}
	b.StopTimer()
	e.m.mu.Lock()
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
	}
	e.m.mu.Unlock()
	require.Less(b, len(e.em.of("s-bench")), b.N+2)
}
