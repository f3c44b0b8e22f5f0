package socketio

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

func TestDecodeEIO(t *testing.T) {
	tests := []struct {
		in   string
		typ  byte
		data string
		err  error
	}{
		{"2", eioPing, "", nil},
		{"2probe", eioPing, "probe", nil},
		{"3", eioPong, "", nil},
		{`40{"token":"x"}`, eioMessage, `0{"token":"x"}`, nil},
		{"5", eioUpgrade, "", nil},
		{"6", eioNoop, "", nil},
		{"1", eioClose, "", nil},
		{"", 0, "", ErrEmptyPacket},
		{"bAQID", 0, "", ErrBinary},
		{"7", 0, "", ErrPacketType},
		{"x", 0, "", ErrPacketType},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, err := DecodeEIO([]byte(tc.in))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.typ, p.Type)
			assert.Equal(t, tc.data, string(p.Data))
		})
	}
}

func TestSplitPayload(t *testing.T) {
	got := SplitPayload([]byte("40\x1e42[\"a\",1]\x1e3"))
	require.Len(t, got, 3)
	assert.Equal(t, "40", string(got[0]))
	assert.Equal(t, `42["a",1]`, string(got[1]))
	assert.Equal(t, "3", string(got[2]))
}

func TestDecodeSIO(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want SIOPacket
		err  error
	}{
		{"connect", "0", SIOPacket{Type: SIOConnect, Namespace: "/", ID: -1}, nil},
		{"connect with auth", `0{"token":"t"}`, SIOPacket{Type: SIOConnect, Namespace: "/", ID: -1, Data: json.RawMessage(`{"token":"t"}`)}, nil},
		{"connect other namespace", `0/admin,{"token":"t"}`, SIOPacket{Type: SIOConnect, Namespace: "/admin", ID: -1, Data: json.RawMessage(`{"token":"t"}`)}, nil},
		{"namespace without comma", "1/admin", SIOPacket{Type: SIODisconnect, Namespace: "/admin", ID: -1}, nil},
		{"disconnect", "1", SIOPacket{Type: SIODisconnect, Namespace: "/", ID: -1}, nil},
		{"event", `2["ping",{}]`, SIOPacket{Type: SIOEvent, Namespace: "/", ID: -1, Data: json.RawMessage(`["ping",{}]`)}, nil},
		{"event with ack", `212["ping",{}]`, SIOPacket{Type: SIOEvent, Namespace: "/", ID: 12, Data: json.RawMessage(`["ping",{}]`)}, nil},
		{"event with namespace and ack", `2/x,7["a"]`, SIOPacket{Type: SIOEvent, Namespace: "/x", ID: 7, Data: json.RawMessage(`["a"]`)}, nil},
		{"ack", `35[1]`, SIOPacket{Type: SIOAck, Namespace: "/", ID: 5, Data: json.RawMessage(`[1]`)}, nil},
		{"empty", "", SIOPacket{}, ErrEmptyPacket},
		{"bad type", "9", SIOPacket{}, ErrPacketType},
		{"binary event", `51-["a",{"_placeholder":true,"num":0}]`, SIOPacket{}, ErrBinary},
		{"binary ack", `61-1[{"_placeholder":true,"num":0}]`, SIOPacket{}, ErrBinary},
		{"bad json", `2["a",`, SIOPacket{}, ErrPayload},
		{"event not an array", `2{"a":1}`, SIOPacket{}, ErrPayload},
		{"event without payload", `2`, SIOPacket{}, ErrPayload},
		{"connect not an object", `0[1]`, SIOPacket{}, ErrPayload},
		{"disconnect with payload", `1{}`, SIOPacket{}, ErrPayload},
		{"ack id too large", `29007199254740993["a"]`, SIOPacket{}, ErrAckID},
		{"ack id overflow", `2999999999999999999999["a"]`, SIOPacket{}, ErrAckID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := DecodeSIO([]byte(tc.in))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, p)
		})
	}
}

func TestEventArgs(t *testing.T) {
	tests := []struct {
		in   string
		name string
		arg  string
		bad  bool
	}{
		{`["ping"]`, "ping", "", false},
		{`["subscribe_session",{"session_id":"s-1"}]`, "subscribe_session", `{"session_id":"s-1"}`, false},
		{`["a",1,2]`, "a", "1", false},
		{`[]`, "", "", true},
		{`[1]`, "", "", true},
		{`[""]`, "", "", true},
		{`{}`, "", "", true},
	}
	for _, tc := range tests {
		name, arg, err := EventArgs(json.RawMessage(tc.in))
		if tc.bad {
			assert.ErrorIs(t, err, ErrPayload, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.name, name)
		assert.Equal(t, tc.arg, string(arg))
	}
}

func TestEncode(t *testing.T) {
	assert.Equal(t, `42["pong",{"a":1}]`, string(AppendEvent(nil, "pong", []byte(`{"a":1}`))))
	assert.Equal(t, `4312[{"a":1}]`, string(AppendAck(nil, 12, []byte(`{"a":1}`))))
	assert.Equal(t, `40{"sid":"x"}`, string(appendSIO(nil, SIOConnect, "/", []byte(`{"sid":"x"}`))))
	assert.Equal(t, `44/admin,{}`, string(appendSIO(nil, SIOConnectError, "/admin", []byte(`{}`))))
	// What we encode, we decode.
	p, err := DecodeSIO(AppendAck(nil, 7, []byte(`"x"`))[1:])
	require.NoError(t, err)
	assert.Equal(t, SIOPacket{Type: SIOAck, Namespace: "/", ID: 7, Data: json.RawMessage(`["x"]`)}, p)
}

func TestEventNames(t *testing.T) {
	want := map[string]string{
		protocol.TypeSessionQueued: "session_queued", protocol.TypeSessionStarted: "session_started",
		protocol.TypeSessionProgress: "session_progress", protocol.TypeSessionCompleted: "session_completed",
		protocol.TypeSessionFailed: "session_failed", protocol.TypeSessionCancelled: "session_cancelled",
		protocol.TypeSessionState: "session_state", protocol.TypeRobotStatus: "robot_status",
		protocol.TypeRobotMetrics: "robot_metrics", protocol.TypeRobotAlert: "alert",
		protocol.TypeRobotNotification: "notification", protocol.TypeSystemStatus: "system_status",
		"future.type": "future_type",
	}
	for typ, name := range want {
		assert.Equal(t, name, EventName(typ), typ)
	}
}

// The format's frame does not name the room: one frame per event.
func TestFormatOncePerEvent(t *testing.T) {
	f := Format{}
	ti, _ := protocol.Lookup(protocol.TypeSessionProgress)
	ev := ti.Example()
	raw, err := protocol.Encode(ev)
	require.NoError(t, err)
	a, err := f.Event("robot:r-001", ev, raw)
	require.NoError(t, err)
	assert.Equal(t, `42["session_progress",`+string(raw)+`]`, string(a))
	assert.Equal(t, `42["gap",{"room":"fleet"}]`, string(f.Notice("gap", []byte(`{"room":"fleet"}`))))
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{"0", `40{"token":"x"}`, `42["ping",{}]`, `4212["subscribe_session",{"session_id":"s"}]`,
		`43/x,1[]`, "2probe", "3", "5", "6", "1", "b", `451-["a",{"_placeholder":true,"num":0}]`,
		"42[\"a\"]\x1e3\x1e40", `44{"message":"x"}`, `429007199254740993["a"]`, `40/ns`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, pkt := range SplitPayload(b) {
			p, err := DecodeEIO(pkt)
			if err != nil || p.Type != eioMessage {
				continue
			}
			sp, err := DecodeSIO(p.Data)
			if err != nil {
				if !errors.Is(err, ErrEmptyPacket) && !errors.Is(err, ErrPacketType) && !errors.Is(err, ErrBinary) &&
					!errors.Is(err, ErrAckID) && !errors.Is(err, ErrPayload) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				continue
			}
			if sp.ID < -1 || sp.ID > maxAckID {
				t.Fatalf("ack id %d out of range", sp.ID)
			}
			if sp.Data != nil && !json.Valid(sp.Data) {
				t.Fatalf("invalid JSON accepted: %q", sp.Data)
			}
			if sp.Type == SIOEvent {
				if name, _, err := EventArgs(sp.Data); err == nil && name == "" {
					t.Fatal("empty event name accepted")
				}
			}
		}
	})
}

// FuzzSession feeds arbitrary long-polling payloads through a session's
// whole inbound path (Engine.IO, Socket.IO, event handlers, hub) and checks
// that nothing panics and a closed session leaves nothing in the hub.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		`40{"token":""}` + "\x1e" + `421["subscribe_session",{"session_id":"s-1","since_seq":0}]`,
		`40` + "\x1e" + `42["subscribe_robot","r-1"]` + "\x1e" + `42["subscribe_fleet"]` + "\x1e" + `42["unsubscribe_fleet"]`,
		`40` + "\x1e" + `427["ping",{"timestamp":[1,2]}]` + "\x1e" + `42["command",{"robot":"r-1","name":"ping"}]`,
		`40/x,{}` + "\x1e" + `41` + "\x1e" + `3` + "\x1e" + `2probe`,
		`40` + "\x1e" + `42["subscribe_session",{"session_id":"a/b"}]` + "\x1e" + `bAAA` + "\x1e" + `5`,
	} {
		f.Add([]byte(s))
	}
	h := hub.New(hub.Options{})
	a, err := auth.New(auth.Options{}) // auth off: every CONNECT gets in
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Options{Hub: h, Auth: a, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	ti, _ := protocol.Lookup(protocol.TypeSessionState)
	ev := ti.Example()
	ev.Session = "s-1"
	raw, _ := protocol.Encode(ev)
	ev, _ = protocol.Decode(raw)
	h.Ingest(ev, raw, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := srv.open(nil)
		if s == nil {
			t.Fatal("session table full: sessions leak")
		}
		s.inMu.Lock()
		for _, pkt := range SplitPayload(b) {
			if !s.handle(pkt) {
				break
			}
		}
		s.inMu.Unlock()
		s.close(reasonClientClose)
		if c := h.Counts(); c.Subscribers != 0 || c.Subscriptions != 0 {
			t.Fatalf("closed session left in the hub: %+v", c)
		}
		if n := srv.Sessions(); n != 0 {
			t.Fatalf("%d sessions left in the table", n)
		}
	})
}
