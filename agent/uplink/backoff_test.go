package uplink

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBackoffDoublesFrom1sTo60sWithJitter(t *testing.T) {
	var seq []time.Duration
	d := time.Second
	for range 9 {
		seq = append(seq, d)
		d = nextBackoff(d, 60*time.Second)
	}
	require.Equal(t, []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}, func() []time.Duration {
		out := make([]time.Duration, len(seq))
		for i, s := range seq {
			out[i] = s / time.Second
		}
		return out
	}())
	seen := map[time.Duration]bool{}
	for range 1000 {
		j := jitter(10 * time.Second)
		require.GreaterOrEqual(t, j, 8*time.Second)
		require.LessOrEqual(t, j, 12*time.Second)
		seen[j/time.Second] = true
	}
	require.Greater(t, len(seen), 2, "jitter must spread the delays")
}
