package hub

import (
	"iter"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// The fan-out is sharded by subscriber: every member belongs to one shard,
// and each shard's goroutine pushes the events its members' rooms get into
// their queues. The hub's front (Ingest, Subscribe, Leave) orders every
// operation under its lock and hands it to the shards through FIFO
// channels, so each subscriber sees events in ingest order (per robot: in
// seq order as received) and its snapshot exactly before the first live
// event after it, while the pushes and encodes of one event run on every
// core at once.

// member is one subscriber as the hub knows it.
type member struct {
	s     Subscriber
	who   Authorizer
	key   any    // grantKey(who)
	shard *shard // fixed at the first subscribe

	joined map[string]struct{} // rooms joined or being joined; guarded by the hub's lock
	rooms  map[string]int      // room → index in that room's group; owned by the shard
}

// group is the members of one room (in one shard) that share a grant.
type group struct {
	who     Authorizer // any member's: they all see the same robots
	members []*member
}

// room is one room's members in one shard, grouped by grant.
type room struct {
	groups []*group
	byKey  map[any]*group
}

// shard delivers to its members. Only its goroutine touches rooms and the
// members' rooms maps.
type shard struct {
	h     *Hub
	idx   int
	ops   chan shardOp
	rooms map[string]*room
	done  chan struct{}
}

// shardOp is one routed event, or a function run on the shard (joins,
// leaves, notices) in order with the events.
type shardOp struct {
	rt *Routed
	fn func(*shard)
}

// shardQueue is each shard's channel capacity: past it the hub's front
// waits, which pushes back on ingest, whose own queue is bounded, larger
// and counts its drops. Pushes never block, so a shard only falls behind
// by CPU; a few dozen events of slack keep the goroutines busy.
const shardQueue = 32

func newShard(h *Hub, idx int) *shard {
	sh := &shard{h: h, idx: idx, ops: make(chan shardOp, shardQueue), rooms: map[string]*room{}, done: make(chan struct{})}
	go sh.run()
	return sh
}

func (sh *shard) run() {
	defer close(sh.done)
	for op := range sh.ops {
		if op.rt != nil {
			sh.route(op.rt)
		} else {
			op.fn(sh)
		}
	}
}

// route delivers rt once to every authorized member of its rooms in this
// shard, with the rooms each is in.
func (sh *shard) route(rt *Routed) {
	for i := 0; i < rt.n; i++ {
		r := sh.rooms[rt.rooms[i]]
		if r == nil {
			continue
		}
		for _, g := range r.groups {
			if !allowed(g.who, rt.Ev) {
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
					sh.h.deliver(m.s, Delivery{Routed: rt, Mask: mask})
				}
			}
		}
	}
}

func (sh *shard) join(m *member, name string) {
	if _, in := m.rooms[name]; in {
		return
	}
	r := sh.rooms[name]
	if r == nil {
		r = &room{byKey: map[any]*group{}}
		sh.rooms[name] = r
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

func (sh *shard) leave(m *member, name string) {
	i, in := m.rooms[name]
	if !in {
		return
	}
	delete(m.rooms, name)
	r := sh.rooms[name]
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
			delete(sh.rooms, name)
		}
	}
}

// notice sends a control frame built per format to the members of room
// whose grant can passes.
func (sh *shard) notice(name string, can func(Authorizer) bool, build func(Format) []byte) {
	r := sh.rooms[name]
	if r == nil {
		return
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
				fr = build(f)
				frames[f] = fr
			}
			if fr != nil {
				m.s.Send(Message{Room: name, Frame: fr})
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
			h.stats.EncodeErrors.Add(1)
			return
		}
		s.Send(d.Message(d.FirstRoom(), frame))
		return
	}
	for room := range d.Rooms() {
		frame, err := d.Frame(f, room)
		if err != nil {
			h.stats.EncodeErrors.Add(1)
			continue
		}
		s.Send(d.Message(room, frame))
	}
}

// systemRobot is the robot field of the relay's own system.status.
const systemRobot = "relay"

// allowed reports whether a grant may see ev: a robot's events go to those
// granted the robot; system.status (built per grant) to everyone.
func allowed(who Authorizer, ev *protocol.Event) bool {
	if ev.Type == protocol.TypeSystemStatus {
		return true
	}
	return who.CanRobot(ev.Robot)
}

// Routed is one event on its way to its rooms, shared by every shard and
// subscriber it reaches. Frames are encoded lazily, once per format and
// room, by whichever shard needs one first.
type Routed struct {
	Ev  *protocol.Event
	Raw []byte
	Key string    // robot id of a robot.metrics event, for latest-only replacement
	TS  time.Time // the event's ts, for the fan-out latency histogram

	rooms [3]string
	n     int

	mu     sync.Mutex // guards frames
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

// newRouted returns e with its rooms (spec §5).
func newRouted(e *Entry) *Routed {
	rt := &Routed{Ev: e.Ev, Raw: e.Raw, TS: e.Ev.TS.Time}
	if e.Ev.Type == protocol.TypeRobotMetrics {
		rt.Key = e.Ev.Robot
	}
	if inFleet(e.Ev.Type) {
		rt.add(RoomFleet)
	}
	if e.Ev.Robot != systemRobot {
		rt.add(RobotRoom(e.Ev.Robot))
	}
	if e.Ev.Session != "" {
		rt.add(SessionRoom(e.Ev.Session))
	}
	return rt
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
// not name their room get one frame per event. It is encoded once per
// format and room however many subscribers and shards ask.
func (d Delivery) Frame(f Format, room string) ([]byte, error) {
	if !perRoom(f) {
		room = ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
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
