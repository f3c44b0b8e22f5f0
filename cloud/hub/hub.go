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
	"log/slog"
	"runtime"
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
	// Shards is the number of fan-out goroutines (subscribers are spread
	// over them). Default GOMAXPROCS.
	Shards int
	// SnapshotSlots bounds the clients encoding and writing snapshot parts
	// at once (SnapshotGate). Default GOMAXPROCS.
	SnapshotSlots int
	// SnapshotRate paces snapshot parts, relay-wide, in bytes per second.
	// Default 0: no pacing.
	SnapshotRate int64
	// History serves since_seq resumes older than a ring (the relay's
	// JetStream history). Default none: such a resume says recovered false.
	History History
	// RelayStats fills system.status data.relay. Default: version only.
	RelayStats func() protocol.RelayStats
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
	if o.Shards <= 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.SnapshotSlots <= 0 {
		o.SnapshotSlots = runtime.GOMAXPROCS(0)
	}
	if o.RelayStats == nil {
		o.RelayStats = func() protocol.RelayStats { return protocol.RelayStats{Version: "dev"} }
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Hub routes events to rooms. It is safe for concurrent use.
type Hub struct {
	o       Options
	log     *slog.Logger
	started time.Time
	shards  []*shard
	gate    *SnapshotGate
	stats   Stats

	// mu guards the fields below and the state, and orders every
	// operation: what it hands to a shard, the shard does in that order.
	mu       sync.Mutex
	st       *state
	subs     map[Subscriber]*member
	interest map[string][]int // room → members per shard, so an event wakes only shards that deliver it
	next     int              // the shard of the next new member
	closed   bool
}

// New returns a Hub and starts its fan-out shards; Close stops them.
func New(o Options) *Hub {
	o.setDefaults()
	h := &Hub{o: o, log: o.Logger, started: o.Now(), subs: map[Subscriber]*member{}, interest: map[string][]int{},
		gate: NewSnapshotGate(o.SnapshotSlots, o.SnapshotRate)}
	h.st = newState(&h.o, &h.stats, h.log)
	for i := range o.Shards {
		h.shards = append(h.shards, newShard(h, i))
	}
	return h
}

// Close stops the shards after what they were handed; later events are
// dropped.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for _, sh := range h.shards {
		close(sh.ops)
	}
	h.mu.Unlock()
	for _, sh := range h.shards {
		<-sh.done
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// SnapshotGate is the gate every client's writer passes to encode and
// write a snapshot part.
func (h *Hub) SnapshotGate() *SnapshotGate { return h.gate }

// Ingest routes one decoded, validated event (raw is its JSON envelope) to
// its rooms and caches. retained marks a message the broker delivered from
// its retained store. It returns false for a duplicate event id (and for a
// robot.status older, by epoch, than the one the relay holds).
func (h *Hub) Ingest(ev *protocol.Event, raw []byte, retained bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	e, ok := h.st.ingest(ev, raw, retained)
	if !ok {
		return false
	}
	h.route(newRouted(e))
	return true
}

// route hands rt to every shard with members in its rooms. Called with
// h.mu held.
func (h *Hub) route(rt *Routed) {
	for k, sh := range h.shards {
		for i := 0; i < rt.n; i++ {
			if n := h.interest[rt.rooms[i]]; n != nil && n[k] > 0 {
				sh.ops <- shardOp{rt: rt}
				break
			}
		}
	}
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
// and calls answer with the snapshot, on the fan-out goroutine of s and in
// order with the events, so that what answer queues comes before any live
// event of the room and after every event the snapshot holds. answer must
// be cheap and must not call the hub: it queues the snapshot's references;
// encoding happens later, on the client's writer (see Stream). Subscribe
// returns once answer has run. sinceSeq < 0 means none. Subscribing to a
// room s is already in answers again with a fresh snapshot.
func (h *Hub) Subscribe(s Subscriber, who Authorizer, room string, sinceSeq int64, answer func(Snapshot)) error {
	kind, id, err := ParseRoom(room)
	if err != nil {
		return err
	}
	// A resume the ring no longer covers is read from the history first,
	// outside the lock; the ring then adds what came after it.
	_, older := h.older(kind, id, sinceSeq, who)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrClosed
	}
	if err := h.st.authorize(kind, id, who); err != nil {
		h.mu.Unlock()
		return err
	}
	m := h.subs[s]
	if m != nil {
		if _, in := m.joined[room]; !in && len(m.joined) >= h.o.MaxRoomsPerClient {
			h.mu.Unlock()
			return ErrTooManyRooms
		}
	} else {
		m = &member{s: s, who: who, key: grantKey(who), shard: h.shards[h.next%len(h.shards)],
			joined: map[string]struct{}{}, rooms: map[string]int{}}
		h.next++
		h.subs[s] = m
	}
	var snap Snapshot
	if older != nil {
		snap = h.st.withOlder(kind, id, sinceSeq, who, older)
	} else {
		snap = h.st.snapshot(kind, id, sinceSeq, who)
	}
	snap.Room = room
	if _, in := m.joined[room]; !in {
		m.joined[room] = struct{}{}
		h.addInterest(room, m.shard.idx, 1)
	}
	done := make(chan struct{})
	m.shard.ops <- shardOp{fn: func(sh *shard) {
		answer(snap)
		sh.join(m, room)
		close(done)
	}}
	h.mu.Unlock()
	<-done
	return nil
}

func (h *Hub) addInterest(room string, shard, d int) {
	n := h.interest[room]
	if n == nil {
		n = make([]int, len(h.shards))
		h.interest[room] = n
	}
	n[shard] += d
	for _, x := range n {
		if x > 0 {
			return
		}
	}
	delete(h.interest, room)
}

// Unsubscribe removes s from room and reports whether it was in it. No
// event of the room reaches s after it returns.
func (h *Hub) Unsubscribe(s Subscriber, room string) bool {
	h.mu.Lock()
	m := h.subs[s]
	if m == nil || h.closed {
		h.mu.Unlock()
		return false
	}
	if _, in := m.joined[room]; !in {
		h.mu.Unlock()
		return false
	}
	delete(m.joined, room)
	h.addInterest(room, m.shard.idx, -1)
	done := make(chan struct{})
	m.shard.ops <- shardOp{fn: func(sh *shard) { sh.leave(m, room); close(done) }}
	h.mu.Unlock()
	<-done
	return true
}

// Leave removes s from every room (when its connection closes).
func (h *Hub) Leave(s Subscriber) {
	h.mu.Lock()
	m := h.subs[s]
	if m == nil || h.closed {
		h.mu.Unlock()
		return
	}
	delete(h.subs, s)
	rooms := make([]string, 0, len(m.joined))
	for room := range m.joined {
		h.addInterest(room, m.shard.idx, -1)
		rooms = append(rooms, room)
	}
	m.joined = nil
	done := make(chan struct{})
	m.shard.ops <- shardOp{fn: func(sh *shard) {
		for _, room := range rooms {
			sh.leave(m, room)
		}
		close(done)
	}}
	h.mu.Unlock()
	<-done
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
	h.stats.Gaps.Add(1)
	h.st.markGap(robot)
	if h.closed {
		return
	}
	type affected struct {
		room string
		obj  []byte
	}
	var rooms []affected
	for name := range h.interest {
		kind, id, _ := ParseRoom(name)
		if robot != "" && (kind == "robot" && id != robot || kind == "session" && h.st.sessions[sessKey{robot, id}] == nil) {
			continue
		}
		b, err := json.Marshal(gapNotice{Room: name, Reason: reason})
		if err == nil {
			rooms = append(rooms, affected{name, b})
		}
	}
	can := func(a Authorizer) bool { return robot == "" || a.CanRobot(robot) }
	for _, sh := range h.shards {
		sh.ops <- shardOp{fn: func(sh *shard) {
			for _, a := range rooms {
				sh.notice(a.room, can, func(f Format) []byte {
					if n, ok := f.(Noticer); ok {
						return n.Notice("gap", a.obj)
					}
					return nil
				})
			}
		}}
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
	c := Counts{Rooms: len(h.interest), Subscribers: len(h.subs)}
	for _, m := range h.subs {
		c.Subscriptions += len(m.joined)
	}
	h.st.counts(&c, nil)
	return c
}

// SystemStatus publishes one system.status event into fleet. Each grant
// gets the counts of the robots it covers (spec §5). relay fills
// data.relay.
func (h *Hub) SystemStatus(relay protocol.RelayStats) {
	relay.UptimeS = h.o.Now().Sub(h.started).Seconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.interest[RoomFleet] == nil || h.closed {
		return
	}
	h.st.sysSeq++
	// One event per distinct grant among fleet's members.
	byKey := map[any]*Routed{}
	for _, m := range h.subs {
		if _, in := m.joined[RoomFleet]; !in || byKey[m.key] != nil {
			continue
		}
		var c Counts
		h.st.counts(&c, m.who)
		ev := protocol.NewEvent(systemRobot, protocol.SystemStatus{
			RobotsOnline: c.RobotsOnline, RobotsKnown: c.RobotsKnown, SessionsRunning: c.SessionsRunning, Relay: relay})
		ev.Seq = h.st.sysSeq
		raw, err := json.Marshal(ev)
		if err != nil {
			h.stats.EncodeErrors.Add(1)
			return
		}
		rt := &Routed{Ev: ev, Raw: raw, TS: ev.TS.Time}
		rt.add(RoomFleet)
		byKey[m.key] = rt
	}
	for k, sh := range h.shards {
		if h.interest[RoomFleet][k] == 0 {
			continue
		}
		sh.ops <- shardOp{fn: func(sh *shard) {
			r := sh.rooms[RoomFleet]
			if r == nil {
				return
			}
			for key, g := range r.byKey {
				rt := byKey[key]
				if rt == nil {
					continue // joined after the counts were taken
				}
				for _, m := range g.members {
					h.deliver(m.s, Delivery{Routed: rt, Mask: 1})
				}
			}
		}}
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

// Flush waits until the shards have delivered everything handed to them so
// far (for tests and benchmarks).
func (h *Hub) Flush() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	shards := h.shards
	var wg sync.WaitGroup
	for _, sh := range shards {
		wg.Add(1)
		sh.ops <- shardOp{fn: func(*shard) { wg.Done() }}
	}
	h.mu.Unlock()
	wg.Wait()
}

// Run waits until ctx ends, then stops the shards (Close): for owners that
// tie the hub's life to a context.
func (h *Hub) Run(ctx context.Context) error {
	<-ctx.Done()
	h.Close()
	return nil
}
