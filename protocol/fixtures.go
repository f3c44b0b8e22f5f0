package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// Fixture is one named golden payload, valid or not. The agent's, relay's
// and fuzz tests reuse them, as mochi-mqtt's packets/tpackets.go does for
// MQTT packets.
type Fixture struct {
	Name    string
	Type    string // the payload's event type, "" when it has none
	Payload []byte
	// Err is empty for a valid payload; otherwise a substring of the error
	// Decode returns, naming the field and the broken rule.
	Err string
	// Is is the sentinel error an invalid payload's error wraps: ErrInvalid,
	// ErrNotJSON, ErrTooLarge or ErrUnknownType.
	Is error
	// GoOnly marks invalid payloads whose broken rule the published JSON
	// Schema cannot express (a comparison between fields, the size limit,
	// UTF-8), so a schema validator accepts them.
	GoOnly bool
}

// Valid reports whether the fixture is a valid payload.
func (f Fixture) Valid() bool { return f.Err == "" }

// Fixtures returns the golden payloads: every type's example, more valid
// variants, and invalid payloads each breaking one rule. They are built on
// first use, so binaries that never call it (the agent) do not carry them.
func Fixtures() []Fixture {
	fixturesOnce.Do(func() { fixtures = buildFixtures() })
	return fixtures
}

// A function rather than a package variable: the linker drops what no
// caller reaches.
var (
	fixturesOnce sync.Once
	fixtures     []Fixture
)

// FixtureNamed returns the fixture called name, e.g. "data/out-of-range".
func FixtureNamed(name string) (Fixture, bool) {
	for _, f := range Fixtures() {
		if f.Name == name {
			return f, true
		}
	}
	return Fixture{}, false
}

// ValidFixtures returns the valid fixtures.
func ValidFixtures() []Fixture { return filterFixtures(true) }

// InvalidFixtures returns the invalid fixtures.
func InvalidFixtures() []Fixture { return filterFixtures(false) }

func filterFixtures(valid bool) []Fixture {
	var out []Fixture
	for _, f := range Fixtures() {
		if f.Valid() == valid {
			out = append(out, f)
		}
	}
	return out
}

// edit changes an example's JSON tree. Paths are dot-separated keys, with
// numbers for array indexes: "data.disks.0.mount".
type edit func(tree map[string]any)

// set sets the value at path, creating nothing but the last key.
func set(path string, v any) edit {
	return func(tree map[string]any) {
		parent, key := walk(tree, path)
		switch p := parent.(type) {
		case map[string]any:
			p[key] = v
		case []any:
			i, _ := strconv.Atoi(key)
			p[i] = v
		}
	}
}

// del removes the key at path.
func del(path string) edit {
	return func(tree map[string]any) {
		parent, key := walk(tree, path)
		delete(parent.(map[string]any), key)
	}
}

func walk(tree map[string]any, path string) (parent any, key string) {
	keys := strings.Split(path, ".")
	var cur any = tree
	for _, k := range keys[:len(keys)-1] {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[k]
		case []any:
			i, _ := strconv.Atoi(k)
			cur = c[i]
		}
	}
	if cur == nil {
		panic(fmt.Sprintf("protocol: fixture path %q does not exist", path))
	}
	return cur, keys[len(keys)-1]
}

// mutated returns the JSON of typ's example after edits.
func mutated(typ string, edits ...edit) []byte {
	b, err := json.Marshal(catalogByType[typ].example())
	if err != nil {
		panic(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var tree map[string]any
	if err := dec.Decode(&tree); err != nil {
		panic(err)
	}
	for _, e := range edits {
		e(tree)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(tree); err != nil {
		panic(err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func buildFixtures() []Fixture {
	var fs []Fixture
	valid := func(name, typ string, edits ...edit) {
		fs = append(fs, Fixture{Name: name, Type: typ, Payload: mutated(typ, edits...)})
	}
	invalid := func(name, typ, want string, edits ...edit) {
		fs = append(fs, Fixture{Name: name, Type: typ, Payload: mutated(typ, edits...), Err: want, Is: ErrInvalid})
	}
	goOnly := func(name, typ, want string, edits ...edit) {
		invalid(name, typ, want, edits...)
		fs[len(fs)-1].GoOnly = true
	}
	raw := func(name, typ string, payload []byte, want string, is error, goOnly bool) {
		fs = append(fs, Fixture{Name: name, Type: typ, Payload: payload, Err: want, Is: is, GoOnly: goOnly})
	}

	for _, t := range catalog {
		valid("example/"+t.Type, t.Type)
	}

	// Valid variants: what lenient receivers must accept.
	valid("valid/unknown-fields-ignored", TypeSessionProgress,
		set("extra", "x"), set("data.extra", map[string]any{"nested": []any{1, 2}}))
	valid("valid/eta-null", TypeSessionProgress, set("data.eta_s", nil))
	valid("valid/eta-absent", TypeSessionProgress, del("data.eta_s"))
	valid("valid/percent-bounds", TypeSessionProgress, set("data.percent", 100))
	valid("valid/ts-offset-and-nanoseconds", TypeSessionProgress, set("ts", "2026-11-25T22:30:00.123456789+01:00"))
	valid("valid/ts-without-fraction", TypeRobotAlert, set("ts", "2026-11-25T21:30:00Z"))
	valid("valid/seq-integral-float", TypeSessionProgress, set("seq", json.Number("1742.0")))
	valid("valid/field-names-are-case-sensitive", TypeSessionProgress, set("data.PERCENT", 500), set("Type", "robot.status"))
	valid("valid/status-offline-lost", TypeRobotStatus, set("data.state", "offline"), set("data.reason", "lost"))
	valid("valid/status-offline-shutdown", TypeRobotStatus, set("data.state", "offline"), set("data.reason", "shutdown"))
	valid("valid/status-with-epoch", TypeRobotStatus, set("data.epoch", 42))
	valid("valid/metrics-no-gpus", TypeRobotMetrics, set("data.gpus", []any{}), set("data.temperatures", []any{}))
	valid("valid/alert-resolved", TypeRobotAlert, set("data.state", "resolved"), set("data.severity", "critical"))
	valid("valid/started-estimate", TypeSessionStarted, set("data.estimated_duration_s", 60.5))
	valid("valid/failed-no-exit-code", TypeSessionFailed, del("data.exit_code"), del("data.error.detail"))
	valid("valid/state-completed", TypeSessionState, set("data.status", "completed"),
		set("data.result", map[string]any{"artifacts": []any{}, "metrics": map[string]any{"size_after": 1}}))
	valid("valid/state-failed", TypeSessionState, set("data.status", "failed"),
		set("data.error", map[string]any{"code": "timeout", "message": "runner timed out after 600s"}))
	valid("valid/command-minimal", TypeCommand, del("data.args"), del("data.expires_at"), del("data.reply_to"), set("data.name", "ping"))
	valid("valid/reply-error", TypeCommandReply, set("data.ok", false), del("data.result"),
		set("data.error", map[string]any{"code": "unknown_pipeline", "message": "no pipeline \"x\""}))
	valid("valid/reply-undecodable-command", TypeCommandReply, set("data.command_id", ""), set("data.ok", false), del("data.result"),
		set("data.error", map[string]any{"code": "invalid_command", "message": "not JSON"}))
	valid("valid/reply-ok-error-null", TypeCommandReply, set("data.error", nil))

	// Envelope.
	invalid("envelope/missing-v", TypeSessionProgress, "v: is required", del("v"))
	invalid("envelope/wrong-v", TypeSessionProgress, "v: must be 1, got 2", set("v", 2))
	invalid("envelope/v-string", TypeSessionProgress, "v: must be an integer, got a string", set("v", "1"))
	invalid("envelope/missing-id", TypeSessionProgress, "id: is required", del("id"))
	invalid("envelope/empty-id", TypeSessionProgress, "id: must match", set("id", ""))
	invalid("envelope/bad-id", TypeSessionProgress, "id: must match", set("id", "01JD Q7Z5"))
	invalid("envelope/missing-ts", TypeSessionProgress, "ts: is required", del("ts"))
	invalid("envelope/bad-ts", TypeSessionProgress, "ts: must be an RFC 3339 time", set("ts", "yesterday"))
	invalid("envelope/ts-number", TypeSessionProgress, "ts: must be a string, got a number", set("ts", 1764106200))
	invalid("envelope/ts-date-only", TypeSessionProgress, "ts: must be an RFC 3339 time", set("ts", "2026-11-25"))
	goOnly("envelope/ts-beyond-9999-in-utc", TypeSessionProgress, "ts: must be an RFC 3339 time", set("ts", "9999-12-31T23:59:59.000-01:00"))
	invalid("envelope/missing-robot", TypeSessionProgress, "robot: is required", del("robot"))
	invalid("envelope/robot-with-slash", TypeSessionProgress, "robot: must match", set("robot", "r/001"))
	invalid("envelope/robot-wildcard", TypeRobotStatus, "robot: must match", set("robot", "+"))
	invalid("envelope/robot-too-long", TypeRobotStatus, "robot: must match", set("robot", strings.Repeat("r", 65)))
	invalid("envelope/robot-leading-dash", TypeRobotStatus, "robot: must match", set("robot", "-r1"))
	invalid("envelope/session-on-robot-type", TypeRobotStatus, "session: must be absent", set("session", "s-1"))
	invalid("envelope/missing-session-on-session-type", TypeSessionProgress, "session: is required", del("session"))
	invalid("envelope/bad-session", TypeSessionProgress, "session: must match", set("session", "s 1"))
	invalid("envelope/missing-seq", TypeSessionProgress, "seq: is required", del("seq"))
	invalid("envelope/negative-seq", TypeSessionProgress, "seq: must be at least 0, got -1", set("seq", -1))
	invalid("envelope/fractional-seq", TypeSessionProgress, "seq: must be an integer, got 1.5", set("seq", 1.5))
	invalid("envelope/command-seq-not-zero", TypeCommand, "seq: must be 0, got 5", set("seq", 5))
	invalid("envelope/missing-data", TypeSessionProgress, "data: is required", del("data"))
	invalid("envelope/data-array", TypeSessionProgress, "data: must be an object, got an array", set("data", []any{}))
	invalid("envelope/data-null", TypeSessionProgress, "data: must be an object, got null", set("data", nil))
	invalid("envelope/missing-type", TypeSessionProgress, "type: is required", del("type"))
	invalid("envelope/type-number", TypeSessionProgress, "type: must be a string, got a number", set("type", 7))
	fs[len(fs)-1].Type, fs[len(fs)-2].Type = "", ""
	raw("envelope/unknown-type", "", mutated(TypeSessionProgress, set("type", "session.paused")), "type: unknown event type \"session.paused\"", ErrUnknownType, false)

	// Payload.
	raw("payload/not-json", "", []byte(`{"v":1,"type":`), "payload is not a JSON object", ErrNotJSON, false)
	raw("payload/array", "", []byte(`[{"v":1}]`), "payload is not a JSON object: got an array", ErrNotJSON, false)
	raw("payload/string", "", []byte(`"session.progress"`), "payload is not a JSON object: got a string", ErrNotJSON, false)
	raw("payload/empty", "", []byte(``), "payload is not a JSON object", ErrNotJSON, false)
	raw("payload/trailing-data", TypeSessionProgress, append(mutated(TypeSessionProgress), " {}"...), "payload is not a JSON object: data after the first JSON value", ErrNotJSON, true)
	raw("payload/trailing-brace", TypeSessionProgress, append(mutated(TypeSessionProgress), '}'), "payload is not a JSON object: data after the first JSON value", ErrNotJSON, true)
	raw("payload/invalid-utf8", TypeRobotNotification, bytes.Replace(mutated(TypeRobotNotification), []byte("Outbox"), []byte("Out\xffbox"), 1), "payload is not a JSON object: not valid UTF-8", ErrNotJSON, true)
	raw("payload/too-large", TypeRobotNotification, mutated(TypeRobotNotification, set("data.message", strings.Repeat("x", MaxPayload))), "payload too large", ErrTooLarge, true)

	// Data: one broken rule each.
	invalid("data/missing-field", TypeSessionProgress, "data.percent: is required", del("data.percent"))
	invalid("data/wrong-type", TypeSessionProgress, "data.percent: must be a number, got a string", set("data.percent", "42"))
	invalid("data/out-of-range", TypeSessionProgress, "data.percent: must be between 0 and 100, got 140", set("data.percent", 140))
	invalid("data/negative-eta", TypeSessionProgress, "data.eta_s: must be at least 0, got -1", set("data.eta_s", -1))
	invalid("data/null-for-string", TypeSessionProgress, "data.stage: must be a string, got null", set("data.stage", nil))
	goOnly("data/number-too-large", TypeSessionProgress, "data.elapsed_s: must be a finite number", set("data.elapsed_s", json.Number("1e400")))
	invalid("data/bad-enum", TypeRobotAlert, "data.severity: must be one of info, warning, critical, got \"fatal\"", set("data.severity", "fatal"))
	invalid("data/alert-state-enum", TypeRobotAlert, "data.state: must be one of firing, resolved", set("data.state", "on"))
	invalid("data/notification-level", TypeRobotNotification, "data.level: must be one of info, success, warning, error", set("data.level", "debug"))
	invalid("data/status-state", TypeRobotStatus, "data.state: must be one of online, offline", set("data.state", "sleeping"))
	invalid("data/offline-without-reason", TypeRobotStatus, "data.reason: is required when state is offline", set("data.state", "offline"))
	invalid("data/status-negative-epoch", TypeRobotStatus, "data.epoch: must be at least 0", set("data.epoch", -1))
	invalid("data/online-with-reason", TypeRobotStatus, "data.reason: must be absent when state is online", set("data.reason", "lost"))
	invalid("data/offline-bad-reason", TypeRobotStatus, "data.reason: must be one of shutdown, lost", set("data.state", "offline"), set("data.reason", "crashed"))
	invalid("data/started-at-bad-time", TypeRobotStatus, "data.started_at: must be an RFC 3339 time", set("data.started_at", "21:30"))
	invalid("data/metrics-missing-cpu", TypeRobotMetrics, "data.cpu: is required", del("data.cpu"))
	invalid("data/metrics-per-core-range", TypeRobotMetrics, "data.cpu.per_core[1]: must be between 0 and 100, got 101", set("data.cpu.per_core.1", 101))
	invalid("data/metrics-per-core-not-array", TypeRobotMetrics, "data.cpu.per_core: must be an array, got an object", set("data.cpu.per_core", map[string]any{}))
	invalid("data/metrics-disk-missing-mount", TypeRobotMetrics, "data.disks[0].mount: is required", del("data.disks.0.mount"))
	invalid("data/metrics-memory-fraction", TypeRobotMetrics, "data.memory.total: must be an integer, got 1.5", set("data.memory.total", 1.5))
	invalid("data/metrics-gpus-null", TypeRobotMetrics, "data.gpus: must be an array, got null", set("data.gpus", nil))
	invalid("data/metrics-gpu-index", TypeRobotMetrics, "data.gpus[0].index: must be at least 0, got -1", set("data.gpus.0.index", -1))
	goOnly("data/metrics-used-over-total", TypeRobotMetrics, "data.memory.used: must not exceed memory.total", set("data.memory.used", json.Number("9999999999999")))
	invalid("data/queued-position", TypeSessionQueued, "data.position: must be at least 0", set("data.position", -3))
	invalid("data/queued-params-not-object", TypeSessionQueued, "data.params: must be an object, got an array", set("data.params", []any{"a"}))
	goOnly("data/queued-params-huge-number", TypeSessionQueued, "data.params.bits: must be a finite number", set("data.params.bits", json.Number("1e999")))
	invalid("data/started-negative-estimate", TypeSessionStarted, "data.estimated_duration_s: must be at least 0", set("data.estimated_duration_s", -5))
	invalid("data/completed-bad-sha256", TypeSessionCompleted, "data.result.artifacts[0].sha256: must match", set("data.result.artifacts.0.sha256", "XYZ"))
	invalid("data/completed-metric-not-number", TypeSessionCompleted, "data.result.metrics.size_after: must be a number, got a string", set("data.result.metrics.size_after", "11 MB"))
	invalid("data/completed-missing-result", TypeSessionCompleted, "data.result: is required", del("data.result"))
	invalid("data/failed-missing-error-code", TypeSessionFailed, "data.error.code: is required", del("data.error.code"))
	invalid("data/failed-exit-code-fraction", TypeSessionFailed, "data.exit_code: must be an integer", set("data.exit_code", 2.5))
	invalid("data/cancelled-missing-duration", TypeSessionCancelled, "data.duration_s: is required", del("data.duration_s"))
	invalid("data/state-bad-status", TypeSessionState, "data.status: must be one of queued, running, completed, failed, cancelled", set("data.status", "paused"))
	invalid("data/state-failed-without-error", TypeSessionState, "data.error: is required when status is failed", set("data.status", "failed"))
	invalid("data/state-completed-without-result", TypeSessionState, "data.result: is required when status is completed", set("data.status", "completed"))
	invalid("data/command-missing-name", TypeCommand, "data.name: is required", del("data.name"))
	invalid("data/command-empty-name", TypeCommand, "data.name: must not be empty", set("data.name", ""))
	invalid("data/reply-empty-error-code", TypeCommandReply, "data.error.code: must not be empty", set("data.ok", false),
		set("data.error", map[string]any{"code": "", "message": "x"}))
	invalid("data/command-bad-expires", TypeCommand, "data.expires_at: must be an RFC 3339 time", set("data.expires_at", "soon"))
	invalid("data/command-args-not-object", TypeCommand, "data.args: must be an object, got a string", set("data.args", "pipeline=x"))
	invalid("data/reply-not-ok-without-error", TypeCommandReply, "data.error: is required when ok is false", set("data.ok", false))
	invalid("data/reply-ok-with-error", TypeCommandReply, "data.error: must be absent when ok is true",
		set("data.error", map[string]any{"code": "internal", "message": "x"}))
	invalid("data/reply-ok-not-bool", TypeCommandReply, "data.ok: must be a boolean, got a string", set("data.ok", "true"))
	invalid("data/reply-error-missing-code", TypeCommandReply, "data.error.code: is required", set("data.ok", false),
		set("data.error", map[string]any{"message": "x"}))
	invalid("data/system-negative-connections", TypeSystemStatus, "data.relay.connections: must be at least 0", set("data.relay.connections", -1))
	invalid("data/system-missing-relay", TypeSystemStatus, "data.relay: is required", del("data.relay"))
	invalid("data/several-errors", TypeSessionProgress, "data.percent: must be between 0 and 100, got -1; data.stage: is required",
		set("data.percent", -1), del("data.stage"))
	return fs
}
