package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"time"
)

// TypeInfo documents one event type: the counterpart of the Python server's
// EVENT_DOCUMENTATION entry.
type TypeInfo struct {
	Type        string
	Description string
	Kind        Kind   // topic kind; empty for system.status (relay-made, no topic)
	Direction   string // "agent → cloud", "cloud → agent", "relay → dashboard"
	QoS         byte
	Retained    bool

	goType   reflect.Type
	envelope *node
	dataNode *node
	example  func() *Event
}

// Topic returns the topic pattern of the type, e.g.
// fleet/v1/robots/{r}/sessions/{s}/events, or "" for relay-made types.
func (t TypeInfo) Topic() string {
	if t.Kind == "" {
		return ""
	}
	return Topic{Robot: "{r}", Session: sessionPlaceholder(t.Kind), Kind: t.Kind}.String(Topics{})
}

func sessionPlaceholder(k Kind) string {
	if k == KindSessionEvents || k == KindSessionState {
		return "{s}"
	}
	return ""
}

// Example returns a valid example event of the type. Examples are fixed
// (ids, times), so generated documents are stable. Each call returns a fresh
// event (decoded from the example's JSON), which the caller may change.
func (t TypeInfo) Example() *Event {
	b, err := json.Marshal(t.example())
	if err != nil {
		panic(fmt.Sprintf("protocol: example of %s: %v", t.Type, err))
	}
	ev, err := Decode(b)
	if err != nil {
		panic(fmt.Sprintf("protocol: example of %s does not validate: %v", t.Type, err))
	}
	return ev
}

// Schema returns the type's JSON Schema (draft 2020-12) as indented JSON.
func (t TypeInfo) Schema() []byte { return schemaJSON(t) }

var exampleTime = time.Date(2026, 11, 25, 21, 30, 0, 123e6, time.UTC)

func ex(typ, session string, seq int64, data Data) func() *Event {
	return func() *Event {
		return &Event{V: Version, Type: typ, ID: "01JDQ7Z5X4W8K1M9T3B6N2R0YC", TS: T(exampleTime),
			Robot: "r-001", Session: session, Seq: seq, Data: data}
	}
}

func f64(v float64) *float64 { return &v }

func ptr[T any](v T) *T { return &v }

var catalog = []TypeInfo{
	{Type: TypeRobotStatus, Kind: KindStatus, Direction: "agent → cloud",
		Description: "The robot's presence. Retained; published online on every connect, offline/shutdown before a clean disconnect, and offline/lost as the Last Will.",
		example: ex(TypeRobotStatus, "", 1, RobotStatus{State: "online", AgentVersion: "1.0.0", Hostname: "r-001", OS: "linux", Arch: "arm64",
			StartedAt: T(exampleTime.Add(-time.Hour)), Pipelines: []string{"quantize-int8", "quantize-fp16"}, Models: []string{"resnet18.onnx"}})},
	{Type: TypeRobotMetrics, Kind: KindMetrics, Direction: "agent → cloud",
		Description: "A hardware sample every metrics interval. QoS 0, retained: the broker keeps only the latest.",
		example: ex(TypeRobotMetrics, "", 2, RobotMetrics{
			CPU:          CPU{Percent: 23.5, PerCore: []float64{20.1, 26.9}, Load1: 0.42, Load5: 0.37, Load15: 0.30},
			Memory:       Memory{Total: 8 << 30, Used: 3 << 30, Available: 5 << 30, Percent: 37.5},
			Swap:         Swap{Total: 2 << 30, Used: 0, Percent: 0},
			Disks:        []Disk{{Mount: "/", Total: 64 << 30, Used: 20 << 30, Percent: 31.25}},
			Net:          Net{RxBps: 1520.5, TxBps: 830.25},
			Temperatures: []Temperature{{Sensor: "cpu-thermal", Celsius: 48.5}},
			GPUs:         []GPU{{Index: 0, Name: "Orin (nvgpu)", UtilPercent: 12, MemUsed: 512 << 20, MemTotal: 8 << 30, TempC: 45.2, PowerW: 6.1}},
			UptimeS:      86400.5,
			Agent:        AgentStats{RSSBytes: 9 << 20, CPUPercent: 0.3, SpoolDepth: 0},
		})},
	{Type: TypeRobotAlert, Kind: KindAlerts, Direction: "agent → cloud",
		Description: "An alert rule changed state: firing once when it trips, resolved once when it clears.",
		example: ex(TypeRobotAlert, "", 3, RobotAlert{Alert: "cpu_temperature_high", Severity: "warning", State: "firing",
			Message: "CPU temperature 86.0 °C above 85 °C for 30s", Value: 86, Threshold: 85})},
	{Type: TypeRobotNotification, Kind: KindNotifications, Direction: "agent → cloud",
		Description: "A notice for people, e.g. that the outbox dropped events while offline.",
		example: ex(TypeRobotNotification, "", 4, RobotNotification{Level: "warning", Title: "Outbox full",
			Message: "dropped 12 progress events while the broker was unreachable"})},
	{Type: TypeSessionQueued, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "A session was accepted and waits for a free slot.",
		example: ex(TypeSessionQueued, "s-7f3a", 10, SessionQueued{Pipeline: "quantize-int8", Model: "resnet18.onnx",
			Params: map[string]any{"per_channel": true}, Position: 0})},
	{Type: TypeSessionStarted, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "A session's runner started.",
		example: ex(TypeSessionStarted, "s-7f3a", 11, SessionStarted{Pipeline: "quantize-int8", Model: "resnet18.onnx",
			Params: map[string]any{"per_channel": true}, EstimatedDurationS: nil})},
	{Type: TypeSessionProgress, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "Progress of a running session; at most 4 per second per session reach MQTT, the last one always.",
		example: ex(TypeSessionProgress, "s-7f3a", 1742, SessionProgress{Percent: 42.5, Stage: "quantize", Message: "layer 12/28",
			ElapsedS: 31.2, EtaS: f64(42.1)})},
	{Type: TypeSessionCompleted, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "A session finished successfully, with its artifacts and result metrics.",
		example: ex(TypeSessionCompleted, "s-7f3a", 1750, SessionCompleted{DurationS: 73.4, Result: SessionResult{
			Artifacts: []Artifact{{Path: "model.int8.onnx", Bytes: 11689512, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}},
			Metrics:   map[string]float64{"size_before": 46758048, "size_after": 11689512, "compression_ratio": 4.0, "max_abs_error": 0.0021}}})},
	{Type: TypeSessionFailed, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "A session failed. Codes include runner_error, timeout, agent_restarted, invalid_model, internal.",
		example: ex(TypeSessionFailed, "s-7f3a", 1751, SessionFailed{DurationS: 3.2,
			Error: ErrorInfo{Code: FailRunnerError, Message: "runner exited with status 2", Detail: "Traceback (most recent call last): ..."}, ExitCode: ptr(2)})},
	{Type: TypeSessionCancelled, Kind: KindSessionEvents, Direction: "agent → cloud",
		Description: "A session was cancelled by a command (or by the agent shutting down).",
		example:     ex(TypeSessionCancelled, "s-7f3a", 1752, SessionCancelled{DurationS: 12.5, Reason: "superseded", By: "operator@example.com"})},
	{Type: TypeSessionState, Kind: KindSessionState, Direction: "agent → cloud",
		Description: "The latest snapshot of a session, retained, republished after every change.",
		example: ex(TypeSessionState, "s-7f3a", 1743, SessionState{Status: StatusRunning, Pipeline: "quantize-int8", Model: "resnet18.onnx",
			Percent: 42.5, Stage: "quantize", Message: "layer 12/28", CreatedAt: T(exampleTime.Add(-40 * time.Second)),
			StartedAt: TimePtr(exampleTime.Add(-31 * time.Second)), EtaS: f64(42.1)})},
	{Type: TypeCommand, Kind: KindCommands, Direction: "cloud → agent",
		Description: "A command for the robot. The envelope id is the command id, robot the target, seq 0.",
		example: func() *Event {
			e := ex(TypeCommand, "", 0, Command{Name: CmdStartSession,
				Args:      map[string]any{"pipeline": "quantize-int8", "model": "resnet18.onnx", "params": map[string]any{"per_channel": true}},
				ExpiresAt: TimePtr(exampleTime.Add(30 * time.Second)), ReplyTo: "dash-42"})()
			e.ID = "01JDQ7Z9K2V3N4P5Q6R7S8T9VW"
			return e
		}},
	{Type: TypeCommandReply, Kind: KindReplies, Direction: "agent → cloud",
		Description: "The agent's answer to a command, ok with a result or not ok with an error code.",
		example: ex(TypeCommandReply, "", 9, CommandReply{CommandID: "01JDQ7Z9K2V3N4P5Q6R7S8T9VW", OK: true,
			Result: map[string]any{"session_id": "s-7f3a", "status": "queued"}, ReplyTo: "dash-42"})},
	{Type: TypeSystemStatus, Direction: "relay → dashboard",
		Description: "The relay's summary, into room fleet every 10 s. Not published over MQTT.",
		example: func() *Event {
			e := ex(TypeSystemStatus, "", 0, SystemStatus{RobotsOnline: 12, RobotsKnown: 14, SessionsRunning: 3,
				Relay: RelayStats{Version: "1.0.0", UptimeS: 3600, Connections: 5, MQTTConnected: true}})()
			e.Robot = "relay"
			return e
		}},
}

// catalogByType indexes catalog. It is a variable initializer rather than
// an init function so that other package variables (Fixtures) may use it.
var catalogByType = indexCatalog()

func indexCatalog() map[string]*TypeInfo {
	m := make(map[string]*TypeInfo, len(catalog))
	for i := range catalog {
		t := &catalog[i]
		t.goType = reflect.TypeOf(t.example().Data)
		if t.Kind != "" {
			t.QoS, t.Retained = t.Kind.QoS(), t.Kind.Retained()
		}
		t.envelope = envelopeNode(t)
		m[t.Type] = t
	}
	return m
}

// envelopeNode builds the rules of a whole envelope of type t.
func envelopeNode(t *TypeInfo) *node {
	n := &node{kind: "object", doc: t.Description}
	req := func(name string, x *node) { n.props = append(n.props, prop{name: name, required: true, node: x}) }
	req("v", &node{kind: "integer", constant: Version, doc: "protocol major version"})
	req("type", &node{kind: "string", constant: t.Type, doc: "the event type"})
	req("id", &node{kind: "string", pattern: "id", doc: "ULID, unique per event"})
	req("ts", &node{kind: "string", format: "date-time", doc: "RFC 3339 UTC with milliseconds, when it happened"})
	req("robot", &node{kind: "string", pattern: "id", doc: "robot id"})
	if IsSessionType(t.Type) {
		req("session", &node{kind: "string", pattern: "id", doc: "session id"})
	} else {
		n.forbidden = []string{"session"}
	}
	seq := &node{kind: "integer", min: f64(0), doc: "per robot, strictly increasing"}
	if t.Type == TypeCommand {
		seq = &node{kind: "integer", constant: 0, doc: "0 for commands"}
	}
	req("seq", seq)
	t.dataNode = nodeFor(t.goType)
	req("data", t.dataNode)
	return n
}

// Types returns the event types in catalog order.
func Types() []string {
	out := make([]string, len(catalog))
	for i, t := range catalog {
		out[i] = t.Type
	}
	return out
}

// Catalog returns the documentation of every event type, in catalog order.
func Catalog() []TypeInfo { return append([]TypeInfo(nil), catalog...) }

// Lookup returns the documentation of one type.
func Lookup(typ string) (TypeInfo, bool) {
	t, ok := catalogByType[typ]
	if !ok {
		return TypeInfo{}, false
	}
	return *t, true
}

// EventDocumentation returns the catalog keyed by type: the counterpart of
// the Python server's EVENT_DOCUMENTATION.
func EventDocumentation() map[string]TypeInfo {
	m := make(map[string]TypeInfo, len(catalog))
	for _, t := range catalog {
		m[t.Type] = t
	}
	return m
}

// SchemaJSON returns the JSON Schema of typ: the counterpart of the Python
// server's get_event_schema().
func SchemaJSON(typ string) ([]byte, error) {
	t, ok := catalogByType[typ]
	if !ok {
		return nil, fmt.Errorf("schema: %w %q", ErrUnknownType, typ)
	}
	return t.Schema(), nil
}

// ExampleJSON returns the example of typ as indented JSON: the counterpart
// of the Python server's get_event_example().
func ExampleJSON(typ string) ([]byte, error) {
	t, ok := catalogByType[typ]
	if !ok {
		return nil, fmt.Errorf("example: %w %q", ErrUnknownType, typ)
	}
	return json.MarshalIndent(t.example(), "", "  ")
}
