package conn

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Admission lets the burst in at once, holds the next in line, refuses
// (503, Retry-After) one that would wait past the bound and one whose client
// leaves while waiting, and a nil Admission admits everything.
func TestAdmission(t *testing.T) {
	a := NewAdmission(4, 300*time.Millisecond) // burst 1, then one per 250 ms
	req := httptest.NewRequest(http.MethodGet, "/ws", nil)
	require.True(t, a.Wait(httptest.NewRecorder(), req), "the burst")

	inLine := make(chan bool, 1)
	go func() { inLine <- a.Wait(httptest.NewRecorder(), req) }()
	require.Eventually(t, func() bool { return a.Stats().Delayed.Load() == 1 }, 5*time.Second, time.Millisecond)

	w := httptest.NewRecorder()
	require.False(t, a.Wait(w, req), "about 500 ms in line is past the 300 ms bound")
	require.Equal(t, http.StatusServiceUnavailable, w.Code)
	require.Equal(t, "1", w.Header().Get("Retry-After"))
	require.True(t, <-inLine, "the one in line got in")

	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan bool, 1)
	go func() { left <- a.Wait(httptest.NewRecorder(), req.WithContext(ctx)) }()
	require.Eventually(t, func() bool { return a.Stats().Delayed.Load() == 2 }, 5*time.Second, time.Millisecond)
	cancel()
	require.False(t, <-left, "a client that left is not admitted")

	require.Equal(t, int64(2), a.Stats().Admitted.Load())
	require.Equal(t, int64(2), a.Stats().Refused.Load())

	var none *Admission
	require.Nil(t, NewAdmission(0, time.Second))
	require.True(t, none.Wait(httptest.NewRecorder(), req))
	require.Zero(t, none.Stats().Admitted.Load())
}
