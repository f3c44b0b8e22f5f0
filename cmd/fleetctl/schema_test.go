package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

func TestSchemaList(t *testing.T) {
	code, out, _ := runFleetctl(t, "schema")
	require.Equal(t, 0, code)
	ls := lines(out)
	require.Len(t, ls, len(protocol.Types())+1, out)
	for i, typ := range protocol.Types() {
		require.True(t, strings.HasPrefix(ls[i+1], typ+" "), ls[i+1])
	}
	require.Contains(t, out, "fleet/v1/robots/{r}/sessions/{s}/events")
}

func TestSchemaType(t *testing.T) {
	for _, typ := range protocol.Types() {
		t.Run(typ, func(t *testing.T) {
			code, out, _ := runFleetctl(t, "schema", typ)
			require.Equal(t, 0, code)
			require.Contains(t, out, `"$id": "`+protocol.SchemaBaseURI+typ+`.json"`)
			require.Contains(t, out, "# Example:")

			code, out, _ = runFleetctl(t, "schema", typ, "--only", "schema")
			require.Equal(t, 0, code)
			want, _ := protocol.SchemaJSON(typ)
			require.Equal(t, string(want), out)

			code, out, _ = runFleetctl(t, "schema", "--only=example", typ)
			require.Equal(t, 0, code)
			require.True(t, json.Valid([]byte(out)))
			require.NoError(t, protocol.ValidateEvent([]byte(out)))
		})
	}
}

func TestSchemaErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"schema", "session.paused"}, 1, `unknown event type "session.paused" (known: robot.status`},
		{[]string{"schema", "a", "b"}, 2, "at most one TYPE"},
		{[]string{"schema", "--only", "both", "command"}, 2, "--only must be schema or example"},
		{[]string{"schema", "--nope"}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runFleetctl(t, tt.args...)
			require.Equal(t, tt.code, code, errOut)
			require.Contains(t, errOut, tt.want)
		})
	}
}
