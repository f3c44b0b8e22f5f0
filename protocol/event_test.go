package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewEvent(t *testing.T) {
	before := time.Now().Add(-time.Millisecond)
	ev := NewEvent("r-1", RobotAlert{Alert: "disk_full", Severity: "critical", State: "firing", Message: "/ 99%", Value: 99, Threshold: 95})
	if ev.V != Version || ev.Type != TypeRobotAlert || ev.Robot != "r-1" || ev.Session != "" || ev.Seq != 0 {
		t.Fatalf("envelope %+v", ev)
	}
	if len(ev.ID) != 26 || ev.TS.Before(before) || ev.TS.After(time.Now()) || ev.TS.Location() != time.UTC || ev.TS.Nanosecond()%int(time.Millisecond) != 0 {
		t.Fatalf("id %q ts %v", ev.ID, ev.TS)
	}
	ev.Seq = 7
	if _, err := Encode(ev); err != nil {
		t.Fatal(err)
	}
	sev := NewSessionEvent("r-1", "s-1", SessionProgress{Percent: 1, Stage: "load", ElapsedS: 0.1})
	if sev.Session != "s-1" || sev.Type != TypeSessionProgress || sev.ID == ev.ID {
		t.Fatalf("session event %+v", sev)
	}
	b, err := Encode(sev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"eta_s":null`) {
		t.Fatalf("unknown eta is not null: %s", b)
	}
}

// TestEncodeNilCollections: data built in Go with nil slices and maps
// encodes as [] and {}, as the contract wants, and the caller's value is not
// changed.
func TestEncodeNilCollections(t *testing.T) {
	cmd := Command{Name: CmdPing}
	ev := NewEvent("r-1", cmd)
	b, err := Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"args":{}`) {
		t.Fatalf("nil args: %s", b)
	}
	if ev.Data.(Command).Args != nil {
		t.Fatal("Encode changed the caller's data")
	}
	m := catalogByType[TypeRobotMetrics].Example().Data.(RobotMetrics)
	m.GPUs, m.Temperatures, m.Disks, m.CPU.PerCore = nil, nil, nil, nil
	b, err = Encode(NewEvent("r-1", m))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"gpus":[]`, `"temperatures":[]`, `"disks":[]`, `"per_core":[]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %s in %s", want, b)
		}
	}
	st := SessionState{Status: StatusCompleted, Pipeline: "p", Model: "m", CreatedAt: Now(), Result: &SessionResult{}}
	b, err = Encode(NewSessionEvent("r-1", "s", st))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"result":{"artifacts":[],"metrics":{}}`) || st.Result.Artifacts != nil {
		t.Fatalf("nil slices under a pointer: %s", b)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		ev   *Event
		want string
		is   error
	}{
		{"nil data", &Event{V: 1, Type: TypeRobotAlert, ID: "x", Robot: "r"}, "data: is required", ErrInvalid},
		{"type differs from data", &Event{V: 1, Type: TypeRobotAlert, ID: "x", Robot: "r", Data: SessionProgress{}}, "type: is \"robot.alert\" but data is session.progress", ErrInvalid},
		{"bad robot", NewEvent("r/1", RobotNotification{Level: "info", Title: "t"}), "robot: must match", ErrInvalid},
		{"session on robot type", func() *Event {
			e := NewEvent("r", RobotNotification{Level: "info", Title: "t"})
			e.Session = "s"
			return e
		}(), "session: must be absent", ErrInvalid},
		{"missing session", NewEvent("r", SessionProgress{Stage: "x"}), "session: is required", ErrInvalid},
		{"data rule", NewSessionEvent("r", "s", SessionProgress{Percent: 140, Stage: "x"}), "data.percent: must be between 0 and 100, got 140", ErrInvalid},
		{"command seq", func() *Event { e := NewEvent("r", Command{Name: "ping"}); e.Seq = 3; return e }(), "seq: must be 0, got 3", ErrInvalid},
		{"too large", NewEvent("r", RobotNotification{Level: "info", Title: "t", Message: strings.Repeat("x", MaxPayload)}), "payload too large", ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Encode(tt.ev)
			if err == nil || !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Encode = %v, want %v containing %q", err, tt.is, tt.want)
			}
		})
	}
}

// TestDataValidate: the data types validate on their own, with the rules of
// Decode and paths under data.
func TestDataValidate(t *testing.T) {
	for _, info := range Catalog() {
		d := info.Example().Data.(interface{ Validate() error })
		if err := d.Validate(); err != nil {
			t.Errorf("%s example data: %v", info.Type, err)
		}
	}
	ok := true
	tests := []struct {
		name string
		d    interface{ Validate() error }
		want string // "" = valid
	}{
		{"progress valid", SessionProgress{Percent: 42, Stage: "quantize", ElapsedS: 1}, ""},
		{"progress out of range", SessionProgress{Percent: 140, Stage: "quantize"}, "data.percent: must be between 0 and 100, got 140"},
		{"progress negative eta", SessionProgress{Stage: "q", EtaS: f64(-1)}, "data.eta_s: must be at least 0, got -1"},
		{"status offline no reason", RobotStatus{State: "offline", AgentVersion: "1", StartedAt: Now()}, "data.reason: is required when state is offline"},
		{"status bad state", RobotStatus{State: "up", AgentVersion: "1", StartedAt: Now()}, "data.state: must be one of online, offline"},
		{"status nil lists ok", RobotStatus{State: "online", AgentVersion: "1", StartedAt: Now()}, ""},
		{"metrics zero value", RobotMetrics{}, ""},
		{"metrics used over total", RobotMetrics{Memory: Memory{Total: 1, Used: 2}}, "data.memory.used: must not exceed memory.total (1), got 2"},
		{"metrics per core", RobotMetrics{CPU: CPU{PerCore: []float64{10, 200}}}, "data.cpu.per_core[1]: must be between 0 and 100, got 200"},
		{"alert bad severity", RobotAlert{Alert: "a", Severity: "fatal", State: "firing", Message: "m"}, "data.severity: must be one of info, warning, critical"},
		{"notification bad level", RobotNotification{Level: "loud", Title: "t"}, "data.level: must be one of"},
		{"queued negative position", SessionQueued{Pipeline: "p", Model: "m", Position: -1}, "data.position: must be at least 0, got -1"},
		{"started negative estimate", SessionStarted{Pipeline: "p", Model: "m", EstimatedDurationS: f64(-2)}, "data.estimated_duration_s: must be at least 0"},
		{"completed bad sha", SessionCompleted{Result: SessionResult{Artifacts: []Artifact{{Path: "a", SHA256: "nope"}}}}, "data.result.artifacts[0].sha256: must match"},
		{"failed valid", SessionFailed{DurationS: 1, Error: ErrorInfo{Code: FailTimeout, Message: "m"}}, ""},
		{"cancelled negative", SessionCancelled{DurationS: -1}, "data.duration_s: must be at least 0"},
		{"state failed no error", SessionState{Status: StatusFailed, Pipeline: "p", Model: "m", CreatedAt: Now()}, "data.error: is required when status is failed"},
		{"command valid", Command{Name: CmdPing}, ""},
		{"reply not ok no error", CommandReply{CommandID: "c", OK: false}, "data.error: is required when ok is false"},
		{"reply ok with error", CommandReply{OK: ok, Error: &CommandError{Code: "x", Message: "y"}}, "data.error: must be absent when ok is true"},
		{"system negative", SystemStatus{RobotsOnline: -1}, "data.robots_online: must be at least 0, got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestCatalog(t *testing.T) {
	docs := EventDocumentation()
	if len(docs) != len(Types()) || len(Catalog()) != len(Types()) {
		t.Fatalf("%d docs, %d types", len(docs), len(Types()))
	}
	for _, typ := range Types() {
		info, ok := Lookup(typ)
		if !ok || docs[typ].Type != typ || info.Description == "" || info.Direction == "" {
			t.Fatalf("%s: %+v", typ, info)
		}
		s, err := SchemaJSON(typ)
		if err != nil || !json.Valid(s) {
			t.Fatalf("%s schema: %v", typ, err)
		}
		ex, err := ExampleJSON(typ)
		if err != nil || ValidateEvent(ex) != nil {
			t.Fatalf("%s example: %v %v", typ, err, ValidateEvent(ex))
		}
		if (info.Kind == "") != (typ == TypeSystemStatus) {
			t.Fatalf("%s kind %q", typ, info.Kind)
		}
		if info.Kind != "" && (info.QoS != info.Kind.QoS() || info.Retained != info.Kind.Retained() || !strings.HasPrefix(info.Topic(), "fleet/v1/robots/{r}/")) {
			t.Fatalf("%s: qos %d retained %v topic %q", typ, info.QoS, info.Retained, info.Topic())
		}
		if IsSessionType(typ) != strings.Contains(info.Topic(), "{s}") {
			t.Fatalf("%s topic %q", typ, info.Topic())
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Fatal("Lookup(nope)")
	}
	if _, err := SchemaJSON("nope"); !errors.Is(err, ErrUnknownType) {
		t.Fatal(err)
	}
	if _, err := ExampleJSON("nope"); !errors.Is(err, ErrUnknownType) {
		t.Fatal(err)
	}
	// Examples are fresh copies: changing one does not change the catalog.
	ex := catalogByType[TypeSessionQueued].Example()
	ex.Data.(SessionQueued).Params["per_channel"] = false
	if catalogByType[TypeSessionQueued].Example().Data.(SessionQueued).Params["per_channel"] != true {
		t.Fatal("Example shares maps with the catalog")
	}
}

// TestEventInOtherJSON: an envelope nested in a relay frame marshals and
// unmarshals through encoding/json with its typed data and validation.
func TestEventInOtherJSON(t *testing.T) {
	type frame struct {
		Type  string   `json:"type"`
		Room  string   `json:"room"`
		Event *Event   `json:"event"`
		Snap  []*Event `json:"snapshot,omitempty"`
	}
	ev := catalogByType[TypeSessionProgress].Example()
	b, err := json.Marshal(frame{Type: "event", Room: "session:s-7f3a", Event: ev, Snap: []*Event{ev}})
	if err != nil {
		t.Fatal(err)
	}
	var got frame
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if p, ok := got.Event.Data.(SessionProgress); !ok || p.Percent != 42.5 || len(got.Snap) != 1 {
		t.Fatalf("got %#v", got)
	}
	bad := strings.Replace(string(b), `"percent":42.5`, `"percent":420`, 1)
	if err := json.Unmarshal([]byte(bad), &got); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "data.percent: must be between 0 and 100, got 420") {
		t.Fatalf("invalid nested event: %v", err)
	}
}
