package protocol

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestTopicBuilders(t *testing.T) {
	for _, prefix := range []string{"", "fleet", "acme/prod"} {
		tp := MustTopics(prefix)
		p := prefix
		if p == "" {
			p = DefaultPrefix
		}
		tests := []struct {
			got, want string
		}{
			{tp.Status("r-1"), p + "/v1/robots/r-1/status"},
			{tp.Metrics("r-1"), p + "/v1/robots/r-1/metrics"},
			{tp.Alerts("r-1"), p + "/v1/robots/r-1/alerts"},
			{tp.Notifications("r-1"), p + "/v1/robots/r-1/notifications"},
			{tp.Replies("r-1"), p + "/v1/robots/r-1/replies"},
			{tp.Commands("r-1"), p + "/v1/robots/r-1/commands"},
			{tp.SessionEvents("r-1", "s.2"), p + "/v1/robots/r-1/sessions/s.2/events"},
			{tp.SessionState("r-1", "s.2"), p + "/v1/robots/r-1/sessions/s.2/state"},
			{tp.AllRobots(), p + "/v1/robots/#"},
			{tp.RobotTree("r-1"), p + "/v1/robots/r-1/#"},
		}
		for _, tt := range tests {
			if tt.got != tt.want {
				t.Errorf("prefix %q: got %q, want %q", prefix, tt.got, tt.want)
			}
		}
	}
}

func TestNewTopicsRejects(t *testing.T) {
	for _, prefix := range []string{"fleet/", "/fleet", "a//b", "fl+eet", "fleet/#", "x\x00"} {
		if _, err := NewTopics(prefix); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("NewTopics(%q) = %v, want ErrInvalidTopic", prefix, err)
		}
	}
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		name, prefix, topic string
		want                Topic
		err                 string // substring; "" = valid
	}{
		{"status", "", "fleet/v1/robots/r-001/status", Topic{Robot: "r-001", Kind: KindStatus}, ""},
		{"metrics", "", "fleet/v1/robots/r-001/metrics", Topic{Robot: "r-001", Kind: KindMetrics}, ""},
		{"alerts", "", "fleet/v1/robots/r-001/alerts", Topic{Robot: "r-001", Kind: KindAlerts}, ""},
		{"notifications", "", "fleet/v1/robots/r-001/notifications", Topic{Robot: "r-001", Kind: KindNotifications}, ""},
		{"replies", "", "fleet/v1/robots/r-001/replies", Topic{Robot: "r-001", Kind: KindReplies}, ""},
		{"commands", "", "fleet/v1/robots/r-001/commands", Topic{Robot: "r-001", Kind: KindCommands}, ""},
		{"session events", "", "fleet/v1/robots/r-001/sessions/s-7f3a/events", Topic{Robot: "r-001", Session: "s-7f3a", Kind: KindSessionEvents}, ""},
		{"session state", "", "fleet/v1/robots/r-001/sessions/s-7f3a/state", Topic{Robot: "r-001", Session: "s-7f3a", Kind: KindSessionState}, ""},
		{"custom prefix", "acme/prod", "acme/prod/v1/robots/R_9.x/status", Topic{Robot: "R_9.x", Kind: KindStatus}, ""},
		{"max length id", "", "fleet/v1/robots/" + strings.Repeat("a", 64) + "/status", Topic{Robot: strings.Repeat("a", 64), Kind: KindStatus}, ""},

		{"wrong prefix", "", "other/v1/robots/r/status", Topic{}, `does not start with "fleet/v1/robots/"`},
		{"wrong version", "", "fleet/v2/robots/r/status", Topic{}, "does not start with"},
		{"prefix of other deployment", "acme", "fleet/v1/robots/r/status", Topic{}, `does not start with "acme/v1/robots/"`},
		{"empty robot", "", "fleet/v1/robots//status", Topic{}, "robot id is empty"},
		{"wildcard robot", "", "fleet/v1/robots/+/status", Topic{}, "robot id \"+\" must match"},
		{"robot too long", "", "fleet/v1/robots/" + strings.Repeat("a", 65) + "/status", Topic{}, "robot id"},
		{"unknown kind", "", "fleet/v1/robots/r/logs", Topic{}, `unknown kind "logs"`},
		{"robot only", "", "fleet/v1/robots/r", Topic{}, "has 1 levels"},
		{"trailing slash", "", "fleet/v1/robots/r/status/", Topic{}, "has 3 levels"},
		{"not sessions", "", "fleet/v1/robots/r/jobs/s/events", Topic{}, `expected "sessions"`},
		{"bad session", "", "fleet/v1/robots/r/sessions/s#/events", Topic{}, "session id"},
		{"empty session", "", "fleet/v1/robots/r/sessions//events", Topic{}, "session id is empty"},
		{"unknown session kind", "", "fleet/v1/robots/r/sessions/s/log", Topic{}, `unknown session kind "log"`},
		{"session kind at robot level", "", "fleet/v1/robots/r/events", Topic{}, `unknown kind "events"`},
		{"too deep", "", "fleet/v1/robots/r/sessions/s/events/x", Topic{}, "has 5 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MustTopics(tt.prefix).Parse(tt.topic)
			if tt.err != "" {
				if err == nil || !errors.Is(err, ErrInvalidTopic) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.topic, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.topic, got, err, tt.want)
			}
			if s := got.String(MustTopics(tt.prefix)); s != tt.topic {
				t.Fatalf("String() = %q, want %q", s, tt.topic)
			}
			if tt.prefix == "" {
				if g2, err := ParseTopic(tt.topic); err != nil || g2 != got {
					t.Fatalf("ParseTopic differs: %+v, %v", g2, err)
				}
			}
		})
	}
}

func TestKindQoSAndRetained(t *testing.T) {
	tests := []struct {
		kind     Kind
		qos      byte
		retained bool
	}{
		{KindStatus, 1, true}, {KindMetrics, 0, true}, {KindAlerts, 1, false}, {KindNotifications, 1, false},
		{KindSessionEvents, 1, false}, {KindSessionState, 1, true}, {KindReplies, 1, false}, {KindCommands, 1, false},
	}
	for _, tt := range tests {
		if tt.kind.QoS() != tt.qos || tt.kind.Retained() != tt.retained {
			t.Errorf("%s: QoS %d retained %v, want %d %v", tt.kind, tt.kind.QoS(), tt.kind.Retained(), tt.qos, tt.retained)
		}
	}
}

// TestForAndMatches: every valid fixture has a topic (but system.status),
// parses back, and matches; other robots, sessions and kinds do not.
func TestForAndMatches(t *testing.T) {
	tp := MustTopics("acme")
	for _, f := range ValidFixtures() {
		t.Run(f.Name, func(t *testing.T) {
			ev, err := Decode(f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			topic, err := tp.For(ev)
			if ev.Type == TypeSystemStatus {
				if !errors.Is(err, ErrInvalidTopic) {
					t.Fatalf("system.status has topic %q, %v", topic, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := tp.Parse(topic)
			if err != nil {
				t.Fatal(err)
			}
			if err := parsed.Matches(ev); err != nil {
				t.Fatalf("%s does not match its own topic %s: %v", ev.Type, topic, err)
			}
			other := parsed
			other.Robot = "someone-else"
			if err := other.Matches(ev); err == nil || !strings.Contains(err.Error(), "envelope robot") {
				t.Fatalf("matched another robot's topic: %v", err)
			}
			if parsed.Kind.IsSession() {
				other = parsed
				other.Session = "other-session"
				if err := other.Matches(ev); err == nil || !strings.Contains(err.Error(), "envelope session") {
					t.Fatalf("matched another session's topic: %v", err)
				}
			}
			wrong := parsed
			wrong.Kind, wrong.Session = KindAlerts, ""
			if ev.Type == TypeRobotAlert {
				wrong.Kind = KindStatus
			}
			if err := wrong.Matches(ev); err == nil || !strings.Contains(err.Error(), "does not belong") {
				t.Fatalf("matched kind %s: %v", wrong.Kind, err)
			}
			if err := (Topic{}).Matches(ev); err == nil {
				t.Fatal("the zero Topic matches")
			}
		})
	}
}

func TestForRejectsBadIDs(t *testing.T) {
	ev := catalogByType[TypeSessionProgress].Example()
	ev.Session = "a/b"
	if _, err := (Topics{}).For(ev); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("For with session %q: %v", ev.Session, err)
	}
	ev = catalogByType[TypeRobotStatus].Example()
	ev.Robot = "#"
	if _, err := (Topics{}).For(ev); !errors.Is(err, ErrInvalidID) {
		t.Fatalf("For with robot %q: %v", ev.Robot, err)
	}
}

func TestIDs(t *testing.T) {
	valid := []string{"r", "R-001", "a.b_c-d", "0", strings.Repeat("x", 64)}
	invalid := []string{"", "-a", ".a", "_a", "a/b", "a+b", "a#", "a b", strings.Repeat("x", 65), "é"}
	for _, s := range valid {
		if !ValidID(s) || CheckID("robot id", s) != nil {
			t.Errorf("%q should be valid", s)
		}
	}
	for _, s := range invalid {
		if err := CheckID("robot id", s); ValidID(s) || !errors.Is(err, ErrInvalidID) || !strings.Contains(err.Error(), "robot id") {
			t.Errorf("%q should be invalid, got %v", s, err)
		}
	}
	sanitize := []struct{ in, want string }{
		{"robot-7", "robot-7"}, {"my robot/7", "my-robot-7"}, {"--x", "x"}, {"", "robot"}, {"///", "robot"},
		{strings.Repeat("a", 70), strings.Repeat("a", 64)}, {"jetson.local", "jetson.local"}, {"ünï", "n--"},
	}
	for _, tt := range sanitize {
		if got := SanitizeID(tt.in); got != tt.want || !ValidID(got) {
			t.Errorf("SanitizeID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewIDMonotonic(t *testing.T) {
	prev := ""
	for range 1000 {
		id := NewID()
		if len(id) != 26 || !ValidID(id) || id <= prev {
			t.Fatalf("id %q after %q", id, prev)
		}
		prev = id
	}
}

// TestPatternFuncsMatchRegexps: the hand-written matchers accept exactly
// what the published regexps accept.
func TestPatternFuncsMatchRegexps(t *testing.T) {
	inputs := []string{"", "a", "-", "a-", "A.b_c-9", strings.Repeat("z", 63), strings.Repeat("z", 64), strings.Repeat("z", 65),
		"a b", "a/b", "a\n", "\na", "é", "aé", strings.Repeat("0", 64), strings.Repeat("f", 64), strings.Repeat("F", 64), strings.Repeat("g", 64)}
	// Every 1- and 2-byte string over a mixed alphabet, and the fixtures' strings.
	alphabet := "aZ09._-/+# \x00\xff"
	for i := range len(alphabet) {
		inputs = append(inputs, alphabet[i:i+1])
		for j := range len(alphabet) {
			inputs = append(inputs, alphabet[i:i+1]+alphabet[j:j+1])
		}
	}
	for _, f := range Fixtures() {
		var tree map[string]any
		if json.Unmarshal(f.Payload, &tree) == nil {
			for _, k := range []string{"id", "robot", "session"} {
				if s, ok := tree[k].(string); ok {
					inputs = append(inputs, s)
				}
			}
		}
	}
	for name, re := range patterns {
		for _, s := range inputs {
			if got, want := patternMatch[name](s), re.MatchString(s); got != want {
				t.Errorf("pattern %s on %q: func %v, regexp %v", name, s, got, want)
			}
		}
	}
}

func TestBuild(t *testing.T) {
	tp := MustTopics("acme")
	tests := []struct {
		in   Topic
		want string
		err  error
		msg  string
	}{
		{Topic{Robot: "r-1", Kind: KindStatus}, "acme/v1/robots/r-1/status", nil, ""},
		{Topic{Robot: "r-1", Session: "s-1", Kind: KindSessionState}, "acme/v1/robots/r-1/sessions/s-1/state", nil, ""},
		{Topic{Robot: "r/1", Kind: KindStatus}, "", ErrInvalidID, "robot id"},
		{Topic{Robot: "", Kind: KindStatus}, "", ErrInvalidID, "robot id is empty"},
		{Topic{Robot: "r-1", Kind: KindSessionEvents}, "", ErrInvalidID, "session id is empty"},
		{Topic{Robot: "r-1", Session: "s+", Kind: KindSessionEvents}, "", ErrInvalidID, "session id"},
		{Topic{Robot: "r-1", Session: "s-1", Kind: KindAlerts}, "", ErrInvalidTopic, `kind "alerts" has no session`},
		{Topic{Robot: "r-1", Kind: "logs"}, "", ErrInvalidTopic, `unknown kind "logs"`},
	}
	for _, tt := range tests {
		got, err := tp.Build(tt.in)
		if tt.err == nil {
			if err != nil || got != tt.want {
				t.Errorf("Build(%+v) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Build(%+v) = %q, %v; want %v containing %q", tt.in, got, err, tt.err, tt.msg)
		}
	}
}
