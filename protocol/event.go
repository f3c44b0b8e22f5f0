package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Version is the protocol major version carried in every envelope's v.
const Version = 1

// MaxPayload is the largest payload the contract allows (spec §2).
const MaxPayload = 256 << 10

// Event is one envelope with its typed data (spec §2).
type Event struct {
	V       int    `json:"v"`
	Type    string `json:"type"`
	ID      string `json:"id"`
	TS      Time   `json:"ts"`
	Robot   string `json:"robot"`
	Session string `json:"session,omitempty"`
	Seq     int64  `json:"seq"`
	Data    Data   `json:"data"`
}

// NewEvent returns an event from robot with v, id and ts filled in. Seq is
// left 0 for the sender (the agent's spool) to assign.
func NewEvent(robot string, data Data) *Event {
	return &Event{V: Version, Type: data.EventType(), ID: NewID(), TS: Now(), Robot: robot, Data: data}
}

// NewSessionEvent is NewEvent for the session.* types.
func NewSessionEvent(robot, session string, data Data) *Event {
	ev := NewEvent(robot, data)
	ev.Session = session
	return ev
}

// IsSessionType reports whether typ is one of the session.* types.
func IsSessionType(typ string) bool { return strings.HasPrefix(typ, "session.") }

// Encode validates ev and returns its JSON payload.
func Encode(ev *Event) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", ev.Type, err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("encode %s: %w: %d bytes, limit %d", ev.Type, ErrTooLarge, len(b), MaxPayload)
	}
	return b, nil
}

// Validate checks ev against every rule of the contract. It round-trips the
// event through JSON so that Go values are judged exactly as a receiver
// would judge the bytes.
func (ev *Event) Validate() error {
	if ev.Data == nil {
		return &ValidationError{Type: ev.Type, Fields: []FieldError{{Path: "data", Msg: "is required"}}}
	}
	if ev.Type != ev.Data.EventType() {
		return &ValidationError{Type: ev.Type, Fields: []FieldError{{Path: "type", Msg: fmt.Sprintf("is %q but data is %s", ev.Type, ev.Data.EventType())}}}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("validate %s: %w", ev.Type, err)
	}
	_, err = Decode(b)
	return err
}

// Decode parses and validates one payload. Every error wraps one of the
// sentinel errors and names the field and the rule. The payload is parsed
// once: the generic tree is validated, then the typed event is filled from
// that same tree (decode.go).
func Decode(payload []byte) (*Event, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), MaxPayload)
	}
	if !utf8.Valid(payload) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrNotJSON)
	}
	tree, err := parseObject(payload)
	if err != nil {
		return nil, err
	}
	typ, ok := tree["type"].(string)
	if !ok {
		if _, present := tree["type"]; !present {
			return nil, &ValidationError{Fields: []FieldError{{Path: "type", Msg: "is required"}}}
		}
		return nil, &ValidationError{Fields: []FieldError{{Path: "type", Msg: "must be a string, got " + jsonKind(tree["type"])}}}
	}
	info, ok := catalogByType[typ]
	if !ok {
		return nil, fmt.Errorf("type: %w %q (known: %s)", ErrUnknownType, clip(typ), strings.Join(Types(), ", "))
	}
	var v validator
	v.check("", info.envelope, tree)
	if err := v.err(typ); err != nil {
		return nil, err
	}
	ev := &Event{V: Version, Type: typ}
	ev.ID = tree["id"].(string)
	ev.Robot = tree["robot"].(string)
	ev.Session, _ = tree["session"].(string)
	ev.Seq, _ = parseInt(tree["seq"].(json.Number))
	if ev.TS, err = parseWireTime(tree["ts"].(string)); err != nil {
		return nil, &ValidationError{Type: typ, Fields: []FieldError{{Path: "ts", Msg: err.Error()}}}
	}
	data := reflect.New(info.goType).Elem()
	path := rootPath("data")
	if err := fill(&path, info.dataNode, tree["data"], data); err != nil {
		return nil, withType(err, typ)
	}
	ev.Data = data.Interface().(Data)
	if c, ok := ev.Data.(crossChecker); ok {
		c.crossCheck(&v)
		if err := v.err(typ); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// withType sets the event type on a *ValidationError.
func withType(err error, typ string) error {
	if ve, ok := err.(*ValidationError); ok {
		ve.Type = typ
	}
	return err
}

// parseValue decodes one JSON value into a generic tree, keeping numbers
// exact.
func parseValue(payload []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the first JSON value", ErrNotJSON)
	}
	return tree, nil
}

// parseObject decodes a payload into a generic tree, keeping numbers exact.
func parseObject(payload []byte) (map[string]any, error) {
	tree, err := parseValue(payload)
	if err != nil {
		return nil, err
	}
	obj, ok := tree.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: got %s", ErrNotJSON, jsonKind(tree))
	}
	return obj, nil
}

// crossChecker is implemented by data types with rules that neither struct
// tags nor conditions can say. The JSON Schema cannot say them either.
type crossChecker interface {
	crossCheck(v *validator)
}

func (d RobotMetrics) crossCheck(v *validator) {
	if d.Memory.Used > d.Memory.Total {
		v.addf("data.memory.used", "must not exceed memory.total (%d), got %d", d.Memory.Total, d.Memory.Used)
	}
}

func (RobotStatus) conditions() []condition {
	return []condition{
		{field: "state", equals: "offline", require: []string{"reason"}},
		{field: "state", equals: "online", forbid: []string{"reason"}},
	}
}

func (CommandReply) conditions() []condition {
	return []condition{
		{field: "ok", equals: false, require: []string{"error"}},
		{field: "ok", equals: true, forbid: []string{"error"}},
	}
}

func (SessionState) conditions() []condition {
	return []condition{
		{field: "status", equals: StatusFailed, require: []string{"error"}},
		{field: "status", equals: StatusCompleted, require: []string{"result"}},
	}
}
