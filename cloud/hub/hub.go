// Package hub is the relay's routing core: rooms (fleet, robot:<id>,
// session:<id>), the bounded caches that make snapshots and since_seq resume
// possible (state.go), de-duplication by event id, and delivery of frames
// encoded once per wire format and room into per-client byte-capped queues.
// It never blocks on a client: delivery is a non-blocking push.
//
// Authorization applies at delivery as well as at subscribe (spec §5): the
// members of a room are grouped by grant (the robots a token may see), and
// each event is checked once per group, so encode-once holds however many
// differently scoped clients share a room.
package hub

import (
	"context"
	"encoding/json"
	"iter"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Subscriber is one client connection of some wire format.
type Subscriber interface {
	// Format is the wire format of the client's frames.
	Format() Format
	// Send queues a frame without blocking (Queue.Push and acting on
	// Overflow). The hub calls it once per event and subscriber for a
	// format whose frames do not name their room, else once per room of
	// the event the subscriber is in.
	Send(m Message)
}

// Authorizer says which robots a subscriber may see (auth.Principal).
type Authorizer interface {
	CanRobot(id string) bool
	AllRobots() bool
}

// GrantKeyer is implemented by Authorizers that can name their grant:
// subscribers with equal keys see the same robots and are authorized
// together. Without it a subscriber is a group of its own (unless it sees
// every robot).
type GrantKeyer interface {
	GrantKey() string
}

type allRobotsKey struct{}

func grantKey(who Authorizer) any {
	if who.AllRobots() {
		return allRobotsKey{}
	}
	if k, ok := who.(GrantKeyer); ok {
		return k.GrantKey()
	}
	return who
}

// Options configures a Hub. Zero fields take the defaults named here, filled
// in by New.
type Options struct {
	// RingEvents is the number of recent events kept per robot and session
	// room for snapshots and resume. Default 300.
	RingEvents int
	// RingBytes caps one ring's bytes. Default 1 MiB.
	RingBytes int
	// DedupIDs is how many recent event ids are remembered. Default 65536.
	DedupIDs int
	// MaxRobots caps the robots the caches know; past it the least recently
	// seen robot is evicted. Default 10000.
	MaxRobots int
	// SessionsPerRobot caps the sessions kept per robot (oldest evicted
	// first). Default 32.
	SessionsPerRobot int
	// RobotTTL evicts a robot not heard from for this long (offline or
	// not). Default 24h.
	RobotTTL time.Duration
	// RobotBytes caps the envelope bytes cached for one robot and its
	// sessions; past it its oldest sessions, then its oldest ring events
	// are evicted. Default 4 MiB.
	RobotBytes int
	// TotalBytes caps the envelope bytes cached over every robot; past it
	// the least recently seen robots are evicted. Default 1 GiB.
	TotalBytes int
	// MaxTextBytes caps each string in an event's data (messages, stderr
	// tails, titles); longer ones are cut, marked with "…". Default 4096.
	MaxTextBytes int
	// MaxRoomsPerClient caps one subscriber's rooms. Default 128.
	MaxRoomsPerClient int
	// SystemStatusInterval is the period of system.status into fleet.
	// Default 10s.
	SystemStatusInterval time.Duration
	// RelayStats fills system.status data.relay. Default: version only.
	RelayStats func() protocol.RelayStats
	// Stats receives the counters. Default: a private Stats.
	Stats *Stats
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.RingEvents <= 0 {
		o.RingEvents = 300
	}
	if o.RingBytes <= 0 {
		o.RingBytes = 1 << 20
	}
	if o.DedupIDs <= 0 {
		o.DedupIDs = 65536
	}
	if o.MaxRobots <= 0 {
		o.MaxRobots = 10000
	}
	if o.SessionsPerRobot <= 0 {
		o.SessionsPerRobot = 32
	}
	if o.RobotTTL <= 0 {
		o.RobotTTL = 24 * time.Hour
	}
	if o.RobotBytes <= 0 {
		o.RobotBytes = 4 << 20
	}
	if o.TotalBytes <= 0 {
		o.TotalBytes = 1 << 30
	}
	if o.MaxTextBytes <= 0 {
		o.MaxTextBytes = 4096
	}
	if o.MaxRoomsPerClient <= 0 {
		o.MaxRoomsPerClient = 128
	}
	if o.SystemStatusInterval <= 0 {
		o.SystemStatusInterval = 10 * time.Second
	}
	if o.RelayStats == nil {
		o.RelayStats = func() protocol.RelayStats { return protocol.RelayStats{Version: "dev"} }
	}
	if o.Stats == nil {
		o.Stats = &Stats{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// member is one subscriber as the hub knows it.
type member struct {
	s     Subscriber
	who   Authorizer
	key   any            // grantKey(who)
	rooms map[string]int // room → index in that room's group's members
}

// group is the members of one room that share a grant.
type group struct {
	who     Authorizer // any member's: they all see the same robots
	members []*member
}

// room is one room's members, grouped by grant.
type room struct {
	groups []*group
	byKey  map[any]*group
}

// Hub routes events to rooms. It is safe for concurrent use.
type Hub struct {
	o       Options
	log     *slog.Logger
	started time.Time

	mu    sync.Mutex // guards every field below and the state, and orders every delivery
	rooms map[string]*room
	subs  map[Subscriber]*member
	st    *state
}

// New returns a Hub.
func New(o Options) *Hub {
	o.setDefaults()
	h := &Hub{o: o, log: o.Logger, started: o.Now(), rooms: map[string]*room{}, subs: map[Subscriber]*member{}}
	h.st = newState(&h.o, h.log)
	return h
}

// Stats returns the counters.
func (h *Hub) Stats() *Stats { return h.o.Stats }

// Ingest routes one decoded, validated event (raw is its JSON envelope) to
// its rooms and caches. retained marks a message the broker delivered from
// its retained store. It returns false for a duplicate event id (and for a
// robot.status older, by epoch, than the one the relay holds).
func (h *Hub) Ingest(ev *protocol.Event, raw []byte, retained bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.st.ingest(ev, raw, retained)
	if !ok {
		return false
	}
	h.route(e, routeKey(ev))
	return true
}

func routeKey(ev *protocol.Event) string {
	if ev.Type == protocol.TypeRobotMetrics {
		return ev.Robot
	}
	return ""
}

// route delivers e once to every authorized member of its rooms, with the
// rooms each is in. Called with h.mu held, so every subscriber sees one
// order.
func (h *Hub) route(e *Entry, key string) {
	rt := &Routed{Ev: e.Ev, Raw: e.Raw, Key: key, TS: e.Ev.TS.Time}
	if inFleet(e.Ev.Type) {
		rt.add(RoomFleet)
	}
	if e.Ev.Robot != systemRobot {
		rt.add(RobotRoom(e.Ev.Robot))
	}
	if e.Ev.Session != "" {
		rt.add(SessionRoom(e.Ev.Session))
	}
	for i := 0; i < rt.n; i++ {
		r := h.rooms[rt.rooms[i]]
		if r == nil {
			continue
		}
		for _, g := range r.groups {
			if !h.allowed(g.who, e.Ev) {
				continue
			}
			for _, m := range g.members {
				mask, first := uint8(0), true
				for j := 0; j < rt.n; j++ {
					if _, in := m.rooms[rt.rooms[j]]; in {
						if j < i {
							first = false // delivered with an earlier room
							break
						}
						mask |= 1 << j
					}
				}
				if first {
					h.deliver(m.s, Delivery{Routed: rt, Mask: mask})
				}
			}
		}
	}
}

// deliver sends d to s: one frame per room, or one frame per event for a
// format whose frames do not name their room.
func (h *Hub) deliver(s Subscriber, d Delivery) {
	f := s.Format()
	if !perRoom(f) {
		frame, err := d.Frame(f, "")
		if err != nil {
			h.o.Stats.EncodeErrors.Add(1)
			return
		}
		s.Send(d.Message(d.FirstRoom(), frame))
		return
	}
	for room := range d.Rooms() {
		frame, err := d.Frame(f, room)
		if err != nil {
			h.o.Stats.EncodeErrors.Add(1)
			continue
		}
		s.Send(d.Message(room, frame))
	}
}

// systemRobot is the robot field of the relay's own system.status.
const systemRobot = "relay"

// allowed reports whether a grant may see ev: a robot's events go to those
// granted the robot; system.status (built per grant) to everyone.
func (h *Hub) allowed(who Authorizer, ev *protocol.Event) bool {
	if ev.Type == protocol.TypeSystemStatus {
		return true
	}
	return who.CanRobot(ev.Robot)
}

// Routed is one event on its way to its rooms, shared by every subscriber
// it reaches. Frames are encoded lazily, once per format and room, on the
// routing goroutine.
type Routed struct {
	Ev  *protocol.Event
	Raw []byte
	Key string    // robot id of a robot.metrics event, for latest-only replacement
	TS  time.Time // the event's ts, for the fan-out latency histogram

	rooms  [3]string
	n      int
	frames []cachedFrame
}

type cachedFrame struct {
	f     Format
	room  string
	frame []byte
	err   error
}

func (rt *Routed) add(room string) {
	rt.rooms[rt.n] = room
	rt.n++
}

// Delivery is one event for one subscriber: Mask selects the event's rooms
// the subscriber is in.
type Delivery struct {
	*Routed
	Mask uint8
}

// Rooms yields the rooms of the event the subscriber is in, in routing
// order (fleet, robot, session).
func (d Delivery) Rooms() iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := 0; i < d.n; i++ {
			if d.Mask&(1<<i) != 0 && !yield(d.rooms[i]) {
				return
			}
		}
	}
}

// FirstRoom returns the first room of the event the subscriber is in.
func (d Delivery) FirstRoom() string {
	for r := range d.Rooms() {
		return r
	}
	return ""
}

// Frame returns the event encoded by f for room; formats whose frames do
// not name the room get one frame per event. It is encoded once per
// format and room however many subscribers ask.
func (d Delivery) Frame(f Format, room string) ([]byte, error) {
	if !perRoom(f) {
		room = ""
	}
	for _, c := range d.frames {
		if c.f == f && c.room == room {
			return c.frame, c.err
		}
	}
	b, err := f.Event(room, d.Ev, d.Raw)
	d.frames = append(d.frames, cachedFrame{f: f, room: room, frame: b, err: err})
	return b, err
}

// Message returns the queue message of the delivery for one of its frames.
func (d Delivery) Message(room string, frame []byte) Message {
	return Message{Room: room, Type: d.Ev.Type, Key: d.Key, Frame: frame, TS: d.TS}
}

// Snapshot is what a subscribe answers with. Events are references to
// immutable cache entries, taken under the hub's lock; Order sorts them
// outside it.
type Snapshot struct {
	Room      string
	Recovered bool
	Events    []*Entry
	fleet     int // fleet snapshots: Events[:fleet] are statuses, to sort by robot; the rest session states; -1 once ordered
}

// Subscribe adds s to room after checking who against the room (spec §5)
// and calls answer with the snapshot under the hub's lock, so that what
// answer queues comes before any live event of the room. answer must be
// cheap: it queues the snapshot's references; encoding happens later, on
// the client's writer (see Stream). sinceSeq < 0 means none. Subscribing
// to a room s is already in answers again with a fresh snapshot.
func (h *Hub) Subscribe(s Subscriber, who Authorizer, room string, sinceSeq int64, answer func(Snapshot)) error {
	kind, id, err := ParseRoom(room)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.st.authorize(kind, id, who); err != nil {
		return err
	}
	m := h.subs[s]
	if m != nil {
		if _, in := m.rooms[room]; !in && len(m.rooms) >= h.o.MaxRoomsPerClient {
			return ErrTooManyRooms
		}
	}
	snap := h.st.snapshot(kind, id, sinceSeq, who)
	snap.Room = room
	answer(snap)
	if m == nil {
		m = &member{s: s, who: who, key: grantKey(who), rooms: map[string]int{}}
		h.subs[s] = m
	}
	h.join(m, room)
	return nil
}

func (h *Hub) join(m *member, name string) {
	if _, in := m.rooms[name]; in {
		return
	}
	r := h.rooms[name]
	if r == nil {
		r = &room{byKey: map[any]*group{}}
		h.rooms[name] = r
	}
	g := r.byKey[m.key]
	if g == nil {
		g = &group{who: m.who}
		r.byKey[m.key] = g
		r.groups = append(r.groups, g)
	}
	m.rooms[name] = len(g.members)
	g.members = append(g.members, m)
}

func (h *Hub) leave(m *member, name string) {
	i, in := m.rooms[name]
	if !in {
		return
	}
	delete(m.rooms, name)
	r := h.rooms[name]
	g := r.byKey[m.key]
	last := len(g.members) - 1
	if i != last {
		moved := g.members[last]
		g.members[i] = moved
		moved.rooms[name] = i
	}
	g.members[last] = nil
	g.members = g.members[:last]
	if len(g.members) == 0 {
		delete(r.byKey, m.key)
		for j, x := range r.groups {
			if x == g {
				r.groups = append(r.groups[:j], r.groups[j+1:]...)
				break
			}
		}
		if len(r.groups) == 0 {
			delete(h.rooms, name)
		}
	}
}

// Unsubscribe removes s from room and reports whether it was in it.
func (h *Hub) Unsubscribe(s Subscriber, room string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[s]
	if m == nil {
		return false
	}
	if _, in := m.rooms[room]; !in {
		return false
	}
	h.leave(m, room)
	return true
}

// Leave removes s from every room (when its connection closes).
func (h *Hub) Leave(s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[s]
	if m == nil {
		return
	}
	for room := range m.rooms {
		h.leave(m, room)
	}
	delete(h.subs, s)
}

// MarkGap records that the relay may have missed events of robot ("" means
// every robot): its MQTT session was not resumed by the broker, or a queue
// overflowed. Every affected ring's coverage mark moves, so the next
// since_seq resume of its rooms answers recovered false, and every member
// of an affected room that may see the robot gets a `gap` notice
// {"room", "reason"} (a /ws frame of type gap, a Socket.IO event gap).
func (h *Hub) MarkGap(robot, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.o.Stats.Gaps.Add(1)
	h.st.markGap(robot)
	for name, r := range h.rooms {
		kind, id, _ := ParseRoom(name)
		var can func(Authorizer) bool
		switch {
		case robot == "":
			can = func(Authorizer) bool { return true }
		case kind == "robot" && id != robot, kind == "session" && h.st.sessions[sessKey{robot, id}] == nil:
			continue
		default:
			can = func(a Authorizer) bool { return a.CanRobot(robot) }
		}
		b, err := json.Marshal(gapNotice{Room: name, Reason: reason})
		if err != nil {
			continue
		}
		var frames map[Format][]byte
		for _, g := range r.groups {
			if !can(g.who) {
				continue
			}
			for _, m := range g.members {
				f := m.s.Format()
				fr, ok := frames[f]
				if !ok {
					if frames == nil {
						frames = map[Format][]byte{}
					}
					if n, can := f.(Noticer); can {
						fr = n.Notice("gap", b)
					}
					frames[f] = fr
				}
				if fr != nil {
					m.s.Send(Message{Room: name, Frame: fr})
				}
			}
		}
	}
}

type gapNotice struct {
	Room   string `json:"room"`
	Reason string `json:"reason"`
}

// RobotState returns the robot's last retained status state ("online",
// "offline") and whether the relay knows its status.
func (h *Hub) RobotState(id string) (state string, known bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st.robotState(id)
}

// SessionRobots returns the robots the relay knows session id for.
func (h *Hub) SessionRobots(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st.sessionRobots(id)
}

// Robots returns the latest status and metrics of every known robot, by id.
func (h *Hub) Robots() []RobotInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st.robotInfos()
}

// Counts are the hub's sizes, for /api/v1/stats and metrics.
type Counts struct {
	Rooms           int `json:"rooms"`
	Subscriptions   int `json:"subscriptions"`
	Subscribers     int `json:"subscribers"`
	RobotsKnown     int `json:"robots_known"`
	RobotsOnline    int `json:"robots_online"`
	Sessions        int `json:"sessions"`
	SessionsRunning int `json:"sessions_running"`
}

// Counts returns the current sizes.
func (h *Hub) Counts() Counts {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := Counts{Rooms: len(h.rooms), Subscribers: len(h.subs)}
	for _, m := range h.subs {
		c.Subscriptions += len(m.rooms)
	}
	h.st.counts(&c, nil)
	return c
}

// SystemStatus publishes one system.status event into fleet. Each grant
// gets the counts of the robots it covers (spec §5).
func (h *Hub) SystemStatus() {
	relay := h.o.RelayStats()
	relay.UptimeS = h.o.Now().Sub(h.started).Seconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.rooms[RoomFleet]
	if r == nil {
		return
	}
	h.st.sysSeq++
	for _, g := range r.groups {
		var c Counts
		h.st.counts(&c, g.who)
		ev := protocol.NewEvent(systemRobot, protocol.SystemStatus{
			RobotsOnline: c.RobotsOnline, RobotsKnown: c.RobotsKnown, SessionsRunning: c.SessionsRunning, Relay: relay})
		ev.Seq = h.st.sysSeq
		raw, err := json.Marshal(ev)
		if err != nil {
			h.o.Stats.EncodeErrors.Add(1)
			return
		}
		rt := &Routed{Ev: ev, Raw: raw, TS: ev.TS.Time}
		rt.add(RoomFleet)
		for _, m := range g.members {
			h.deliver(m.s, Delivery{Routed: rt, Mask: 1})
		}
	}
}

// Sweep evicts robots not heard from for RobotTTL.
func (h *Hub) Sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.sweep()
}

// Clear handles an empty retained payload on topic tp: the retained message
// was deleted, so the matching cache entry goes too (a cleared session.state
// removes the session).
func (h *Hub) Clear(tp protocol.Topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.clear(tp)
}

// Run publishes system.status every SystemStatusInterval and sweeps stale
// robots until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	sys := time.NewTicker(h.o.SystemStatusInterval)
	defer sys.Stop()
	sweep := time.NewTicker(min(h.o.RobotTTL/4, time.Minute))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sys.C:
			h.SystemStatus()
		case <-sweep.C:
			h.Sweep()
		}
	}
}

// Grant wraps who with the robots claim it was made from, so that members
// with equal claims are authorized as one group.
func Grant(who Authorizer, robots []string) Authorizer {
	return keyedGrant{who, strings.Join(robots, "\x00")}
}

type keyedGrant struct {
	Authorizer
	key string
}

func (g keyedGrant) GrantKey() string { return g.key }
