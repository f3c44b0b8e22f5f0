package dedup_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/dedup"
)

func TestRing(t *testing.T) {
	r := dedup.New(2)
	require.True(t, r.Add("a"))
	require.False(t, r.Add("a"))
	require.True(t, r.Add("b"))
	require.True(t, r.Add("c")) // forgets a
	require.True(t, r.Add("a"))
	require.False(t, r.Add("c"))
}
