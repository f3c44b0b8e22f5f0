package wsapi_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/wsapi"
)

// TestMissingOptions: a missing required option is an error naming it.
func TestMissingOptions(t *testing.T) {
	_, err := wsapi.New(wsapi.Options{})
	require.ErrorIs(t, err, wsapi.ErrOption)
	require.ErrorContains(t, err, "Hub is required")
	_, err = wsapi.New(wsapi.Options{Hub: hub.New(hub.Options{})})
	require.ErrorContains(t, err, "Auth is required")
}
