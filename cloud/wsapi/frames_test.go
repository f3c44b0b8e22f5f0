package wsapi_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/wsapi"
	"github.com/robotfleet/fleetlink/protocol"
)

func TestDecodeOp(t *testing.T) {
	cases := []struct {
		frame string
		op    string
		err   error
		ref   string
	}{
		{`{"op":"subscribe","room":"robot:r-1","since_seq":12}`, "subscribe", nil, ""},
		{`{"type":"subscribe","room":"fleet","ref":"7"}`, "subscribe", nil, `"7"`},
		{`{"op":"unsubscribe","room":"fleet"}`, "unsubscribe", nil, ""},
		{`{"op":"ping","ref":3}`, "ping", nil, "3"},
		{` {"op":"command","robot":"r-1","name":"ping","args":{"a":1},"ref":"x"} `, "command", nil, `"x"`},
		{`{"op":"subscribe","room":"fleet","extra":[1,2]}`, "subscribe", nil, ""},
		{``, "", wsapi.ErrBadFrame, ""},
		{`null`, "", wsapi.ErrBadFrame, ""},
		{`{"op":1,"ref":"r"}`, "", wsapi.ErrBadFrame, `"r"`},
		{`{"op":"subscribe"`, "", wsapi.ErrBadFrame, ""},
		{`{"op":"nope"}`, "nope", wsapi.ErrUnknownOp, ""},
		{`{}`, "", wsapi.ErrUnknownOp, ""},
		{`{"op":"subscribe","room":""}`, "subscribe", wsapi.ErrBadField, ""},
		{`{"op":"subscribe","room":"fleet","since_seq":-1}`, "subscribe", wsapi.ErrBadField, ""},
		{`{"op":"command","robot":"r 1","name":"ping"}`, "command", wsapi.ErrBadField, ""},
		{`{"op":"command","robot":"r-1"}`, "command", wsapi.ErrBadField, ""},
		{`{"op":"ping","ref":[1]}`, "", wsapi.ErrBadField, ""},
	}
	for _, tc := range cases {
		t.Run(tc.frame, func(t *testing.T) {
			op, err := wsapi.DecodeOp([]byte(tc.frame))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			if tc.op != "" {
				require.Equal(t, tc.op, op.Op)
			}
			require.Equal(t, tc.ref, string(op.Ref))
		})
	}
}

func TestJSONEventFrame(t *testing.T) {
	info, _ := protocol.Lookup(protocol.TypeSessionProgress)
	ev := info.Example()
	raw, err := protocol.Encode(ev)
	require.NoError(t, err)
	b, err := wsapi.JSON{}.Event("session:s-7f3a", ev, raw)
	require.NoError(t, err)
	var f struct {
		Type  string          `json:"type"`
		Room  string          `json:"room"`
		Event json.RawMessage `json:"event"`
	}
	require.NoError(t, json.Unmarshal(b, &f))
	require.Equal(t, "event", f.Type)
	require.Equal(t, "session:s-7f3a", f.Room)
	require.JSONEq(t, string(raw), string(f.Event))
}

// FuzzDecodeOp: the op decoder never panics, and what it accepts is a known
// op with the fields that op needs; an echoed ref is always valid JSON.
func FuzzDecodeOp(f *testing.F) {
	for _, s := range []string{
		`{"op":"subscribe","room":"robot:r-1","since_seq":12,"ref":"1"}`,
		`{"type":"ping","ref":7}`,
		`{"op":"command","robot":"r-1","name":"start_session","args":{"pipeline":"quantize-int8"},"ref":"c"}`,
		`{"op":"unsubscribe","room":"session:s-1"}`,
		`{"op":"subscribe","room":"fleet","since_seq":1e400}`,
		`{"op":"\u0000","ref":"\ud800"}`,
		`[]`, `"x"`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		op, err := wsapi.DecodeOp(b)
		if len(op.Ref) > 0 && !json.Valid(op.Ref) {
			t.Fatalf("invalid ref %q echoed", op.Ref)
		}
		if err != nil {
			return
		}
		switch op.Op {
		case wsapi.OpSubscribe, wsapi.OpUnsubscribe:
			if op.Room == "" {
				t.Fatal("accepted without room")
			}
			if op.SinceSeq != nil && *op.SinceSeq < 0 {
				t.Fatal("accepted a negative since_seq")
			}
		case wsapi.OpCommand:
			if !protocol.ValidID(op.Robot) || op.Name == "" {
				t.Fatal("accepted a command without a valid robot and name")
			}
		case wsapi.OpPing:
		default:
			t.Fatalf("accepted unknown op %q", op.Op)
		}
	})
}
