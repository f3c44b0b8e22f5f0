package hub_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

// rawFormat frames an event as its raw envelope; it counts encodes.
type rawFormat struct {
	mu sync.Mutex
	n  int
}

func (f *rawFormat) Event(_ string, _ *protocol.Event, raw []byte) ([]byte, error) {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
	return raw, nil
}

func (f *rawFormat) Notice(name string, obj []byte) []byte { return append([]byte(name+" "), obj...) }

type sub struct {
	f    hub.Format
	mu   sync.Mutex
	msgs []hub.Message
}

func (s *sub) Format() hub.Format { return s.f }

func (s *sub) Send(m hub.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
}

type all struct{}

func (all) CanRobot(string) bool { return true }
func (all) AllRobots() bool      { return true }

type only string

func (o only) CanRobot(id string) bool { return id == string(o) }
func (only) AllRobots() bool           { return false }

var seq int64

func ingest(t *testing.T, h *hub.Hub, robot, session string, d protocol.Data, retained bool) *protocol.Event {
	t.Helper()
	seq++
	ev := protocol.NewEvent(robot, d)
	ev.Session, ev.Seq = session, seq
	raw, err := protocol.Encode(ev)
	require.NoError(t, err)
	dec, err := protocol.Decode(raw)
	require.NoError(t, err)
	require.True(t, h.Ingest(dec, raw, retained))
	return dec
}

func subscribe(t *testing.T, h *hub.Hub, s hub.Subscriber, who hub.Authorizer, room string, since int64) hub.Snapshot {
	t.Helper()
	var snap hub.Snapshot
	require.NoError(t, h.Subscribe(s, who, room, since, func(sn hub.Snapshot) { snap = sn }))
	return snap
}

// TestEncodeOncePerFormat: the fan-out encodes an event once per room and
// format, whatever the number of subscribers.
func TestEncodeOncePerFormat(t *testing.T) {
	h := hub.New(hub.Options{})
	f1, f2 := &rawFormat{}, &rawFormat{}
	var subs []*sub
	for i := 0; i < 50; i++ {
		f := hub.Format(f1)
		if i%2 == 1 {
			f = f2
		}
		s := &sub{f: f}
		subs = append(subs, s)
		subscribe(t, h, s, all{}, "robot:r-1", -1)
	}
	ingest(t, h, "r-1", "", protocol.RobotNotification{Level: "info", Title: "x"}, false)
	h.Flush()
	require.Equal(t, 1, f1.n)
	require.Equal(t, 1, f2.n)
	for _, s := range subs {
		require.Len(t, s.msgs, 1)
	}
}

// TestRingAndResume exercises the coverage rule of since_seq.
func TestRingAndResume(t *testing.T) {
	h := hub.New(hub.Options{RingEvents: 3})
	s := &sub{f: &rawFormat{}}
	// A retained status (the broker kept only the latest) means anything
	// before it may be missing.
	st := ingest(t, h, "r-1", "", protocol.RobotStatus{State: "online", AgentVersion: "1", StartedAt: protocol.Now()}, true)
	snap := subscribe(t, h, s, all{}, "robot:r-1", st.Seq-1)
	require.False(t, snap.Recovered)
	// A retained re-send means the relay (re)subscribed: whatever the robot
	// published after its status while the relay was away may be lost, so
	// nothing is recovered until the next live event.
	snap = subscribe(t, h, s, all{}, "robot:r-1", st.Seq)
	require.False(t, snap.Recovered)

	var evs []*protocol.Event
	for i := 0; i < 3; i++ {
		evs = append(evs, ingest(t, h, "r-1", "", protocol.RobotNotification{Level: "info", Title: "n"}, false))
	}
	snap = subscribe(t, h, s, all{}, "robot:r-1", evs[0].Seq)
	require.True(t, snap.Recovered)
	require.Equal(t, []*protocol.Event{evs[1], evs[2]}, events(snap))
	snap = subscribe(t, h, s, all{}, "robot:r-1", evs[0].Seq-1)
	require.True(t, snap.Recovered, "the status fell out, but nothing after it did")
	require.Len(t, snap.Events, 3)
	// One more pushes evs[0] out: asking from before it can no longer be
	// answered.
	ingest(t, h, "r-1", "", protocol.RobotNotification{Level: "info", Title: "n"}, false)
	snap = subscribe(t, h, s, all{}, "robot:r-1", evs[0].Seq-1)
	require.False(t, snap.Recovered)
	snap = subscribe(t, h, s, all{}, "robot:r-1", evs[0].Seq)
	require.True(t, snap.Recovered)
}

func events(s hub.Snapshot) []*protocol.Event {
	var out []*protocol.Event
	for _, e := range s.Events {
		out = append(out, e.Ev)
	}
	return out
}

// TestAuthorization: robot and session rooms follow the robots claim.
func TestAuthorization(t *testing.T) {
	h := hub.New(hub.Options{MaxRoomsPerClient: 3})
	ingest(t, h, "r-1", "s-1", protocol.SessionQueued{Pipeline: "p", Model: "m"}, false)
	s := &sub{f: &rawFormat{}}
	cases := []struct {
		room string
		who  hub.Authorizer
		err  error
	}{
		{"robot:r-1", only("r-1"), nil},
		{"robot:r-2", only("r-1"), hub.ErrForbidden},
		{"session:s-1", only("r-1"), nil},
		{"session:s-1", only("r-2"), hub.ErrForbidden},
		{"session:s-unseen", only("r-1"), nil}, // spec §5: unseen sessions are open, delivery filters
		{"room", all{}, hub.ErrUnknownRoom},
		{"robot:", all{}, hub.ErrUnknownRoom},
		{"session:a/b", all{}, hub.ErrUnknownRoom},
		{"fleet", all{}, hub.ErrTooManyRooms},
		{"robot:r-1", only("r-1"), nil}, // already in it: answered again
	}
	for _, tc := range cases {
		err := h.Subscribe(s, tc.who, tc.room, -1, func(hub.Snapshot) {})
		if tc.err == nil {
			require.NoError(t, err, tc.room)
		} else {
			require.ErrorIs(t, err, tc.err, tc.room)
		}
	}
	h.Leave(s)
	require.Zero(t, h.Counts().Subscriptions)
}

// TestEviction: robots beyond MaxRobots and past RobotTTL leave the caches.
func TestEviction(t *testing.T) {
	h := hub.New(hub.Options{MaxRobots: 2})
	for _, r := range []string{"a", "b", "c"} {
		ingest(t, h, r, "s-"+r, protocol.SessionQueued{Pipeline: "p", Model: "m"}, false)
	}
	c := h.Counts()
	require.Equal(t, 2, c.RobotsKnown)
	require.Equal(t, 2, c.Sessions)
	require.Equal(t, int64(1), h.Stats().Evicted.Load())
}

// TestDedup: the same id twice is forwarded once.
func TestDedup(t *testing.T) {
	h := hub.New(hub.Options{DedupIDs: 2})
	ev := ingest(t, h, "r-1", "", protocol.RobotNotification{Level: "info", Title: "x"}, false)
	raw, _ := protocol.Encode(ev)
	require.False(t, h.Ingest(ev, raw, false))
	require.Equal(t, int64(1), h.Stats().Duplicates.Load())
}

// TestRobotTTL: a robot not heard from for RobotTTL is evicted by Sweep.
func TestRobotTTL(t *testing.T) {
	now := time.Unix(1000, 0)
	h := hub.New(hub.Options{RobotTTL: time.Minute, Now: func() time.Time { return now }})
	ingest(t, h, "old", "", protocol.RobotNotification{Level: "info", Title: "x"}, false)
	now = now.Add(50 * time.Second)
	ingest(t, h, "new", "", protocol.RobotNotification{Level: "info", Title: "x"}, false)
	now = now.Add(20 * time.Second)
	h.Sweep()
	require.Equal(t, 1, h.Counts().RobotsKnown)
	_, known := h.RobotState("new")
	require.False(t, known, "no status yet, but the robot is still cached")
	require.Len(t, h.Robots(), 1)
	require.Equal(t, "new", h.Robots()[0].ID)
}

// TestLastWillWithLowerSeqWins: the Last Will is numbered when the agent
// connects, before its online status, and arrives last; the robot is
// offline, and a command gets robot_offline.
func TestLastWillWithLowerSeqWins(t *testing.T) {
	h := hub.New(hub.Options{})
	will := protocol.NewEvent("r-w", protocol.RobotStatus{State: "offline", Reason: "lost", AgentVersion: "1", StartedAt: protocol.Now()})
	will.Seq = 0 // below any seq ingest gives the online status
	online := ingest(t, h, "r-w", "", protocol.RobotStatus{State: "online", AgentVersion: "1", StartedAt: protocol.Now()}, false)
	raw, err := protocol.Encode(will)
	require.NoError(t, err)
	ev, err := protocol.Decode(raw)
	require.NoError(t, err)
	require.True(t, h.Ingest(ev, raw, false))
	state, known := h.RobotState("r-w")
	require.True(t, known)
	require.Equal(t, "offline", state)
	// A client that saw the online status and resumes gets the Will.
	snap := subscribe(t, h, &sub{f: &rawFormat{}}, all{}, "robot:r-w", online.Seq)
	require.True(t, snap.Recovered)
	require.NotEmpty(t, snap.Events)
	require.Equal(t, will.ID, snap.Events[len(snap.Events)-1].Ev.ID)
}

// ingestRaw feeds the hub an envelope edited as raw JSON (fields the typed
// event may not know yet).
func ingestRaw(t *testing.T, h *hub.Hub, ev *protocol.Event, edit func(map[string]any)) bool {
	t.Helper()
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	edit(m)
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	dec, err := protocol.Decode(raw)
	require.NoError(t, err)
	return h.Ingest(dec, raw, false)
}

// TestStatusEpoch: a status of an older connection (lower data.epoch, e.g.
// a Will that fired late) never replaces a newer one; equal epochs and
// statuses without one: the last received wins (issue 14 item 3).
func TestStatusEpoch(t *testing.T) {
	h := hub.New(hub.Options{})
	st := func(state string, epoch any, seq int64) bool {
		d := protocol.RobotStatus{State: state, AgentVersion: "1", StartedAt: protocol.Now()}
		if state == "offline" {
			d.Reason = "lost"
		}
		ev := protocol.NewEvent("r-e", d)
		ev.Seq = seq
		return ingestRaw(t, h, ev, func(m map[string]any) {
			if epoch != nil {
				m["data"].(map[string]any)["epoch"] = epoch
			}
		})
	}
	state := func() string { s, _ := h.RobotState("r-e"); return s }
	require.True(t, st("online", 2, 10))
	require.False(t, st("offline", 1, 5), "an older connection's Will")
	require.Equal(t, "online", state())
	require.Equal(t, int64(1), h.Stats().StaleStatus.Load())
	require.True(t, st("offline", 2, 9), "the same connection's Will: last received wins")
	require.Equal(t, "offline", state())
	require.True(t, st("online", nil, 11), "no epoch: as before, last received wins")
	require.Equal(t, "online", state())
	require.True(t, st("offline", 3, 12))
	require.Equal(t, "offline", state())
}

// TestSessionRingGap: retained re-sends and MarkGap move the session
// ring's mark too, not only the robot ring's (issue 14 item 2).
func TestSessionRingGap(t *testing.T) {
	h := hub.New(hub.Options{})
	s := &sub{f: &rawFormat{}}
	q := ingest(t, h, "r-1", "s-1", protocol.SessionQueued{Pipeline: "p", Model: "m"}, false)
	p := ingest(t, h, "r-1", "s-1", protocol.SessionProgress{Percent: 1, Stage: "x"}, false)
	require.True(t, subscribe(t, h, s, all{}, "session:s-1", q.Seq).Recovered)
	// The relay resubscribed: the broker re-sends the retained state.
	ingest(t, h, "r-1", "s-1", protocol.SessionState{Status: "running", Pipeline: "p", Model: "m", CreatedAt: protocol.Now()}, true)
	require.False(t, subscribe(t, h, s, all{}, "session:s-1", p.Seq).Recovered, "events after the cut may be lost")
	n := ingest(t, h, "r-1", "s-1", protocol.SessionProgress{Percent: 2, Stage: "x"}, false)
	require.True(t, subscribe(t, h, s, all{}, "session:s-1", n.Seq-1).Recovered)
	require.False(t, subscribe(t, h, s, all{}, "session:s-1", p.Seq).Recovered)

	// MarkGap for every robot.
	ingest(t, h, "r-2", "s-2", protocol.SessionQueued{Pipeline: "p", Model: "m"}, false)
	for _, room := range []string{"robot:r-1", "robot:r-2", "session:s-2"} {
		subscribe(t, h, s, all{}, room, -1)
	}
	s.msgs = nil
	h.MarkGap("", "queue_overflow")
	h.Flush()
	for _, room := range []string{"robot:r-1", "session:s-1", "robot:r-2", "session:s-2"} {
		require.False(t, subscribe(t, h, s, all{}, room, n.Seq).Recovered, room)
	}
	var gaps []string
	for _, m := range s.msgs {
		if m.Type == "" && len(m.Frame) > 4 && string(m.Frame[:4]) == "gap " {
			gaps = append(gaps, m.Room)
		}
	}
	require.ElementsMatch(t, []string{"robot:r-1", "session:s-1", "robot:r-2", "session:s-2"}, gaps)
}

// TestOnceWithRooms: a subscriber in several of an event's rooms gets the
// event once per room for a per-room format, once in all for a roomless
// one, each frame encoded once.
func TestOnceWithRooms(t *testing.T) {
	h := hub.New(hub.Options{})
	perRoom, roomless := &sub{f: &rawFormat{}}, &sub{f: &roomlessFormat{}}
	for _, s := range []*sub{perRoom, roomless} {
		for _, room := range []string{"fleet", "robot:r-1", "session:s-1"} {
			subscribe(t, h, s, all{}, room, -1)
		}
	}
	ingest(t, h, "r-1", "s-1", protocol.SessionQueued{Pipeline: "p", Model: "m"}, false)
	h.Flush()
	require.Len(t, perRoom.msgs, 3)
	require.Len(t, roomless.msgs, 1)
	require.Equal(t, 1, roomless.f.(*roomlessFormat).n)
}

type roomlessFormat struct{ rawFormat }

func (*roomlessFormat) Roomless() {}

// TestCacheBudgets: one robot cannot make the relay cache more than
// RobotBytes, all robots together no more than TotalBytes, and free text
// is cut to MaxTextBytes; every eviction is counted (issue 9 item 13).
func TestCacheBudgets(t *testing.T) {
	h := hub.New(hub.Options{RobotBytes: 64 << 10, TotalBytes: 160 << 10, MaxTextBytes: 2048})
	big := strings.Repeat("x", 2000)
	for i := range 200 {
		ingest(t, h, "r-greedy", fmt.Sprintf("s-%d", i%40), protocol.SessionProgress{Percent: 1, Stage: "s", Message: big}, false)
		ingest(t, h, "r-greedy", "", protocol.RobotAlert{Alert: fmt.Sprintf("a-%d", i), Severity: "info", State: "firing", Message: big}, false)
	}
	require.LessOrEqual(t, h.Stats().CachedBytes.Load(), int64(64<<10))
	require.Positive(t, h.Stats().BudgetEvictions.Load())

	// Free text is cut, the event still valid and forwarded.
	s := &sub{f: &rawFormat{}}
	subscribe(t, h, s, all{}, "robot:r-text", -1)
	ev := ingest(t, h, "r-text", "", protocol.RobotNotification{Level: "info", Title: "t", Message: strings.Repeat("é", 5000)}, false)
	require.Equal(t, int64(1), h.Stats().TextClipped.Load())
	h.Flush()
	require.Len(t, s.msgs, 1)
	got, err := protocol.Decode(s.msgs[0].Frame)
	require.NoError(t, err)
	require.Equal(t, ev.ID, got.ID)
	msg := got.Data.(protocol.RobotNotification).Message
	require.LessOrEqual(t, len(msg), 2048+len("…"))
	require.True(t, strings.HasSuffix(msg, "…"))

	// Many robots: the least recently seen go past TotalBytes.
	for i := range 100 {
		ingest(t, h, fmt.Sprintf("r-%d", i), "", protocol.RobotNotification{Level: "info", Title: "t", Message: big}, false)
	}
	require.LessOrEqual(t, h.Stats().CachedBytes.Load(), int64(160<<10))
	require.Less(t, h.Counts().RobotsKnown, 100)
}

// TestFleetSnapshotHasFiringAlerts: a fleet view opened after an alert
// fired still counts it; resolved alerts and robots outside the grant are
// not in it.
func TestFleetSnapshotHasFiringAlerts(t *testing.T) {
	h := hub.New(hub.Options{})
	alert := func(robot, name, state string) {
		ingest(t, h, robot, "", protocol.RobotAlert{Alert: name, Severity: "warning", State: state, Message: "m", Value: 1, Threshold: 1}, false)
	}
	alert("r-1", "cpu_hot", "firing")
	alert("r-1", "disk_full", "firing")
	alert("r-1", "disk_full", "resolved")
	alert("r-2", "cpu_hot", "firing")
	names := func(snap hub.Snapshot) []string {
		var out []string
		for _, ev := range events(snap) {
			if ev.Type == protocol.TypeRobotAlert {
				out = append(out, ev.Robot+"/"+ev.Data.(protocol.RobotAlert).Alert)
			}
		}
		return out
	}
	require.ElementsMatch(t, []string{"r-1/cpu_hot", "r-2/cpu_hot"}, names(subscribe(t, h, &sub{f: &rawFormat{}}, all{}, "fleet", -1)))
	require.Equal(t, []string{"r-1/cpu_hot"}, names(subscribe(t, h, &sub{f: &rawFormat{}}, only("r-1"), "fleet", -1)))
}
