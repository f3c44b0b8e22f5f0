package protocol

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the default topic prefix.
const DefaultPrefix = "fleet"

// Kind names one of the per-robot topics of spec §3.
type Kind string

// The topic kinds. Their string is the topic's last segment.
const (
	KindStatus        Kind = "status"
	KindMetrics       Kind = "metrics"
	KindAlerts        Kind = "alerts"
	KindNotifications Kind = "notifications"
	KindSessionEvents Kind = "events" // sessions/{s}/events
	KindSessionState  Kind = "state"  // sessions/{s}/state
	KindReplies       Kind = "replies"
	KindCommands      Kind = "commands"
)

// QoS returns the MQTT QoS the contract gives the topic kind.
func (k Kind) QoS() byte {
	if k == KindMetrics {
		return 0
	}
	return 1
}

// Retained reports whether messages on the kind's topic are retained.
func (k Kind) Retained() bool {
	return k == KindStatus || k == KindMetrics || k == KindSessionState
}

// Topics builds and parses the topics under one prefix.
// The zero value uses DefaultPrefix.
type Topics struct {
	prefix string
}

// NewTopics returns the topics under prefix ("" means DefaultPrefix). The
// prefix may have several levels but no wildcards, empty levels or
// leading/trailing '/'.
func NewTopics(prefix string) (Topics, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "+#\x00") {
		return Topics{}, fmt.Errorf("%w: prefix %q must not contain '+', '#' or NUL", ErrInvalidTopic, prefix)
	}
	for _, lvl := range strings.Split(prefix, "/") {
		if lvl == "" {
			return Topics{}, fmt.Errorf("%w: prefix %q has an empty level", ErrInvalidTopic, prefix)
		}
	}
	return Topics{prefix: prefix}, nil
}

// MustTopics is NewTopics for prefixes known to be valid.
func MustTopics(prefix string) Topics {
	t, err := NewTopics(prefix)
	if err != nil {
		panic(err)
	}
	return t
}

// Prefix returns the prefix.
func (t Topics) Prefix() string {
	if t.prefix == "" {
		return DefaultPrefix
	}
	return t.prefix
}

func (t Topics) robot(r string) string { return t.Prefix() + "/v1/robots/" + r + "/" }

// Build returns the topic of tp under prefix t after checking it: the ids
// follow the rule of spec §1, the kind is known, and a session is given for
// exactly the session kinds. The unchecked builders below are for ids the
// caller has already checked (CheckID).
func (t Topics) Build(tp Topic) (string, error) {
	if err := CheckID("robot id", tp.Robot); err != nil {
		return "", err
	}
	switch tp.Kind {
	case KindStatus, KindMetrics, KindAlerts, KindNotifications, KindReplies, KindCommands:
		if tp.Session != "" {
			return "", fmt.Errorf("%w: kind %q has no session, got %q", ErrInvalidTopic, tp.Kind, tp.Session)
		}
	case KindSessionEvents, KindSessionState:
		if err := CheckID("session id", tp.Session); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("%w: unknown kind %q", ErrInvalidTopic, tp.Kind)
	}
	return tp.String(t), nil
}

// Robot returns the topic of a robot-level kind (not the session kinds).
func (t Topics) Robot(r string, k Kind) string { return t.robot(r) + string(k) }

// Status returns fleet/v1/robots/{r}/status.
func (t Topics) Status(r string) string { return t.Robot(r, KindStatus) }

// Metrics returns fleet/v1/robots/{r}/metrics.
func (t Topics) Metrics(r string) string { return t.Robot(r, KindMetrics) }

// Alerts returns fleet/v1/robots/{r}/alerts.
func (t Topics) Alerts(r string) string { return t.Robot(r, KindAlerts) }

// Notifications returns fleet/v1/robots/{r}/notifications.
func (t Topics) Notifications(r string) string { return t.Robot(r, KindNotifications) }

// Replies returns fleet/v1/robots/{r}/replies.
func (t Topics) Replies(r string) string { return t.Robot(r, KindReplies) }

// Commands returns fleet/v1/robots/{r}/commands.
func (t Topics) Commands(r string) string { return t.Robot(r, KindCommands) }

// SessionEvents returns fleet/v1/robots/{r}/sessions/{s}/events.
func (t Topics) SessionEvents(r, s string) string { return t.robot(r) + "sessions/" + s + "/events" }

// SessionState returns fleet/v1/robots/{r}/sessions/{s}/state.
func (t Topics) SessionState(r, s string) string { return t.robot(r) + "sessions/" + s + "/state" }

// AllRobots returns the filter for the whole tree, fleet/v1/robots/#.
func (t Topics) AllRobots() string { return t.Prefix() + "/v1/robots/#" }

// RobotTree returns the filter for one robot's tree, fleet/v1/robots/{r}/#.
func (t Topics) RobotTree(r string) string { return t.robot(r) + "#" }

// Topic is a parsed topic.
type Topic struct {
	Robot   string
	Session string // set for the session kinds only
	Kind    Kind
}

// Parse splits a topic into robot, session and kind, or returns an error
// naming what is wrong.
func (t Topics) Parse(topic string) (Topic, error) {
	base := t.Prefix() + "/v1/robots/"
	rest, ok := strings.CutPrefix(topic, base)
	if !ok {
		return Topic{}, fmt.Errorf("%w: %q does not start with %q", ErrInvalidTopic, topic, base)
	}
	parts := strings.Split(rest, "/")
	if err := CheckID("robot id", parts[0]); err != nil {
		return Topic{}, fmt.Errorf("%w: %q: %v", ErrInvalidTopic, topic, err)
	}
	switch len(parts) {
	case 2:
		k := Kind(parts[1])
		switch k {
		case KindStatus, KindMetrics, KindAlerts, KindNotifications, KindReplies, KindCommands:
			return Topic{Robot: parts[0], Kind: k}, nil
		}
		return Topic{}, fmt.Errorf("%w: %q: unknown kind %q", ErrInvalidTopic, topic, parts[1])
	case 4:
		if parts[1] != "sessions" {
			return Topic{}, fmt.Errorf("%w: %q: expected \"sessions\" after the robot id, got %q", ErrInvalidTopic, topic, parts[1])
		}
		if err := CheckID("session id", parts[2]); err != nil {
			return Topic{}, fmt.Errorf("%w: %q: %v", ErrInvalidTopic, topic, err)
		}
		k := Kind(parts[3])
		if k != KindSessionEvents && k != KindSessionState {
			return Topic{}, fmt.Errorf("%w: %q: unknown session kind %q (want events or state)", ErrInvalidTopic, topic, parts[3])
		}
		return Topic{Robot: parts[0], Session: parts[2], Kind: k}, nil
	}
	return Topic{}, fmt.Errorf("%w: %q has %d levels after %q, want 2 or 4", ErrInvalidTopic, topic, len(parts), base)
}

// ParseTopic parses a topic under DefaultPrefix.
func ParseTopic(topic string) (Topic, error) { return Topics{}.Parse(topic) }

// IsSession reports whether k is one of the per-session kinds.
func (k Kind) IsSession() bool { return k == KindSessionEvents || k == KindSessionState }

// String rebuilds the topic under prefix t. Session is used by the session
// kinds only.
func (tp Topic) String(t Topics) string {
	if tp.Kind.IsSession() {
		return t.robot(tp.Robot) + "sessions/" + tp.Session + "/" + string(tp.Kind)
	}
	return t.Robot(tp.Robot, tp.Kind)
}

// For returns the topic an event is published on, from its type, robot and
// session. system.status has no topic.
func (t Topics) For(ev *Event) (string, error) {
	info, ok := catalogByType[ev.Type]
	if !ok || info.Kind == "" {
		return "", fmt.Errorf("%w: %q is not published over MQTT", ErrInvalidTopic, ev.Type)
	}
	tp := Topic{Robot: ev.Robot, Kind: info.Kind}
	if info.Kind.IsSession() {
		tp.Session = ev.Session
	}
	return t.Build(tp)
}

// Matches checks that ev may be carried on topic tp: its type belongs to the
// topic's kind and its robot (and session) are the topic's. The relay uses it
// so one robot cannot speak for another.
func (tp Topic) Matches(ev *Event) error {
	if tp.Kind == "" {
		return fmt.Errorf("%w: empty topic kind", ErrInvalidTopic)
	}
	info, ok := catalogByType[ev.Type]
	if !ok || info.Kind != tp.Kind {
		return fmt.Errorf("%w: type %q does not belong on a %q topic", ErrInvalidTopic, ev.Type, tp.Kind)
	}
	if ev.Robot != tp.Robot {
		return fmt.Errorf("%w: envelope robot %q differs from topic robot %q", ErrInvalidTopic, ev.Robot, tp.Robot)
	}
	if tp.Kind.IsSession() && ev.Session != tp.Session {
		return fmt.Errorf("%w: envelope session %q differs from topic session %q", ErrInvalidTopic, ev.Session, tp.Session)
	}
	return nil
}
