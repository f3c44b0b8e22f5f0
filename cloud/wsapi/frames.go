package wsapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

// Client → relay ops (spec §5).
const (
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPing        = "ping"
	OpCommand     = "command"
)

// Op is one decoded client frame. The discriminator is "op"; "type" is
// accepted as an alias.
type Op struct {
	Op       string          `json:"op"`
	Type     string          `json:"type"`
	Room     string          `json:"room"`
	SinceSeq *int64          `json:"since_seq"`
	Ref      json.RawMessage `json:"ref"`
	Robot    string          `json:"robot"`
	Name     string          `json:"name"`
	Args     map[string]any  `json:"args"`
}

// DecodeOp parses and checks one client frame. On error the returned Op
// still carries the ref when it could be read, so the error can echo it.
func DecodeOp(b []byte) (Op, error) {
	var op Op
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return op, ErrBadFrame
	}
	if err := json.Unmarshal(b, &op); err != nil {
		// Try to recover the ref for the error frame.
		var r struct {
			Ref json.RawMessage `json:"ref"`
		}
		if json.Unmarshal(b, &r) == nil && validRef(r.Ref) {
			op.Ref = r.Ref
		} else {
			op.Ref = nil
		}
		return op, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if !validRef(op.Ref) {
		op.Ref = nil
		return op, fmt.Errorf("%w: ref must be a string or a number", ErrBadField)
	}
	if op.Op == "" {
		op.Op = op.Type
	}
	switch op.Op {
	case OpSubscribe:
		if op.Room == "" {
			return op, fmt.Errorf("%w: room is required", ErrBadField)
		}
		if op.SinceSeq != nil && *op.SinceSeq < 0 {
			return op, fmt.Errorf("%w: since_seq must be >= 0", ErrBadField)
		}
	case OpUnsubscribe:
		if op.Room == "" {
			return op, fmt.Errorf("%w: room is required", ErrBadField)
		}
	case OpPing:
	case OpCommand:
		if err := protocol.CheckID("robot", op.Robot); err != nil {
			return op, fmt.Errorf("%w: %v", ErrBadField, err)
		}
		if op.Name == "" {
			return op, fmt.Errorf("%w: name is required", ErrBadField)
		}
	case "":
		return op, fmt.Errorf("%w: op is required", ErrUnknownOp)
	default:
		return op, fmt.Errorf("%w %q (want subscribe, unsubscribe, ping or command)", ErrUnknownOp, clip(op.Op))
	}
	return op, nil
}

func validRef(r json.RawMessage) bool {
	if len(r) == 0 || string(r) == "null" {
		return true
	}
	return r[0] == '"' || r[0] == '-' || (r[0] >= '0' && r[0] <= '9')
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// JSON is the hub.Format of the JSON WebSocket API.
type JSON struct{}

// Event returns {"type":"event","room":ROOM,"event":ENVELOPE}. Room names
// are identifiers (spec §1), so they need no escaping.
func (JSON) Event(room string, _ *protocol.Event, raw []byte) ([]byte, error) {
	b := make([]byte, 0, len(raw)+len(room)+36)
	b = append(b, `{"type":"event","room":"`...)
	b = append(b, room...)
	b = append(b, `","event":`...)
	b = append(b, raw...)
	return append(b, '}'), nil
}

// Notice implements hub.Noticer: it returns {"type":NAME,...obj's fields}.
func (JSON) Notice(name string, obj []byte) []byte {
	b := make([]byte, 0, len(obj)+len(name)+12)
	b = append(b, `{"type":"`...)
	b = append(b, name...)
	b = append(b, '"')
	if len(obj) > 2 {
		b = append(b, ',')
		b = append(b, obj[1:]...)
		return b
	}
	return append(b, '}')
}

var _ hub.Noticer = JSON{}

// snapshotStream streams a subscribe's snapshot (spec §5): `subscribed`
// with the first part, then `snapshot` frames, the last with more false.
type snapshotStream struct {
	parts *hub.Parts
	ref   json.RawMessage
}

// Next implements hub.Stream. Room names are identifiers (spec §1) and
// refs were checked by DecodeOp, so the frame is assembled directly.
func (s *snapshotStream) Next(buf [][]byte) ([][]byte, bool) {
	es, first, more := s.parts.Next()
	n := 96 + len(s.ref)
	for _, e := range es {
		n += len(e.Raw) + 1
	}
	b := make([]byte, 0, n)
	if first {
		b = append(b, `{"type":"subscribed","room":"`...)
		b = append(b, s.parts.Snap.Room...)
		b = append(b, `","recovered":`...)
		b = strconv.AppendBool(b, s.parts.Snap.Recovered)
		if len(s.ref) > 0 {
			b = append(b, `,"ref":`...)
			b = append(b, s.ref...)
		}
	} else {
		b = append(b, `{"type":"snapshot","room":"`...)
		b = append(b, s.parts.Snap.Room...)
		b = append(b, '"')
	}
	b = append(b, `,"more":`...)
	b = strconv.AppendBool(b, more)
	b = append(b, `,"snapshot":[`...)
	for i, e := range es {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.Raw...)
	}
	b = append(b, "]}"...)
	return append(buf, b), more
}

type connectedFrame struct {
	Type       string   `json:"type"`
	ClientID   string   `json:"client_id"`
	ServerTime string   `json:"server_time"`
	HeartbeatS float64  `json:"heartbeat_s"`
	Role       string   `json:"role"`
	Robots     []string `json:"robots"`
	Expires    *string  `json:"expires_at,omitempty"`
}

type unsubscribedFrame struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	Ref  json.RawMessage `json:"ref,omitempty"`
}

type pongFrame struct {
	Type       string          `json:"type"`
	Ref        json.RawMessage `json:"ref,omitempty"`
	ServerTime string          `json:"server_time"`
}

type errorFrame struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Ref     json.RawMessage `json:"ref,omitempty"`
	Room    string          `json:"room,omitempty"`
	Robot   string          `json:"robot,omitempty"`
}

type droppedFrame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	Count int    `json:"count"`
}

type commandReplyFrame struct {
	Type      string                 `json:"type"`
	Ref       json.RawMessage        `json:"ref,omitempty"`
	OK        bool                   `json:"ok"`
	Result    json.RawMessage        `json:"result,omitempty"`
	Error     *protocol.CommandError `json:"error,omitempty"`
	CommandID string                 `json:"command_id"`
	Robot     string                 `json:"robot"`
	Reply     json.RawMessage        `json:"reply,omitempty"` // the robot's command.reply envelope
}

func serverTime() string { return protocol.Now().String() }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own frame structs are marshalled; they always encode.
		panic(fmt.Sprintf("wsapi: encode frame: %v", err))
	}
	return b
}
