// Package hub is the relay's fan-out core: rooms (fleet, robot:<id>,
// session:<id>), the bounded caches that make snapshots and since_seq resume
// possible, de-duplication by event id, and delivery of frames encoded once
// per wire format into per-client byte-capped queues. It never blocks on a
// client: delivery is a non-blocking Push.
package hub

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Subscriber is one client connection of some wire format.
type Subscriber interface {
	// Format is the wire format of the client's frames.
	Format() Format
	// Send queues a frame without blocking (Queue.Push and acting on
	// Overflow).
	Send(m Message)
}

// Authorizer says which robots a subscriber may see (auth.Principal).
type Authorizer interface {
	CanRobot(id string) bool
	AllRobots() bool
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

type robotState struct {
	id       string
	status   *Entry
	metrics  *Entry
	alerts   map[string]*Entry // firing alerts by name
	sessions []string          // recent session ids, oldest first, ≤ SessionsPerRobot
	ring     *ring             // everything but robot.metrics
	lastSeen time.Time
}

type sessionState struct {
	id, robot string
	state     *Entry
	ring      *ring // session events except session.state
}

// Hub routes events to rooms. It is safe for concurrent use.
type Hub struct {
	o       Options
	log     *slog.Logger
	started time.Time

	mu       sync.Mutex // guards every field below, and orders every delivery
	rooms    map[string]map[Subscriber]struct{}
	subs     map[Subscriber]map[string]struct{}
	robots   map[string]*robotState
	sessions map[string]*sessionState
	seen     *idSet
	sysSeq   int64
}

// New returns a Hub.
func New(o Options) *Hub {
	o.setDefaults()
	return &Hub{
		o: o, log: o.Logger, started: o.Now(),
		rooms:    map[string]map[Subscriber]struct{}{},
		subs:     map[Subscriber]map[string]struct{}{},
		robots:   map[string]*robotState{},
		sessions: map[string]*sessionState{},
		seen:     newIDSet(o.DedupIDs),
	}
}

// Stats returns the counters.
func (h *Hub) Stats() *Stats { return h.o.Stats }

// Ingest routes one decoded, validated event (raw is its JSON envelope) to
// its rooms and caches. retained marks a message the broker delivered from
// its retained store. It returns false for a duplicate event id.
func (h *Hub) Ingest(ev *protocol.Event, raw []byte, retained bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.seen.add(ev.ID) {
		h.o.Stats.Duplicates.Add(1)
		return false
	}
	e := &Entry{Ev: ev, Raw: raw}
	r := h.robot(ev.Robot)
	r.lastSeen = h.o.Now()
	switch ev.Type {
	case protocol.TypeRobotStatus:
		// Not ordered by seq: an agent's Last Will is numbered when the
		// connection is made, before the online status that follows it, and
		// the broker publishes it last. The broker hands over a robot's
		// status messages in the order they took effect (the retained one
		// at subscribe time first), so the last one received is the truth.
		r.status = e
	case protocol.TypeRobotMetrics:
		if newer(r.metrics, ev) {
			r.metrics = e
		}
	case protocol.TypeRobotAlert:
		a := ev.Data.(protocol.RobotAlert)
		if a.State == "firing" {
			if len(r.alerts) < 256 || r.alerts[a.Alert] != nil {
				r.alerts[a.Alert] = e
			}
		} else {
			delete(r.alerts, a.Alert)
		}
	}
	if ev.Type != protocol.TypeRobotMetrics {
		r.ring.add(e, retained)
	}
	var s *sessionState
	if ev.Session != "" {
		s = h.session(r, ev.Session)
		if ev.Type == protocol.TypeSessionState {
			if newer(s.state, ev) {
				s.state = e
			}
		} else {
			s.ring.add(e, retained)
		}
	}

	ts := ev.TS.Time
	if inFleet(ev.Type) {
		h.deliver(RoomFleet, e, ts, "")
	}
	key := ""
	if ev.Type == protocol.TypeRobotMetrics {
		key = ev.Robot
	}
	h.deliver(RobotRoom(ev.Robot), e, ts, key)
	if s != nil {
		h.deliver(SessionRoom(s.id), e, ts, "")
	}
	return true
}

// newer reports whether ev may replace the cached c: a late retained
// redelivery must not roll a cache back.
func newer(c *Entry, ev *protocol.Event) bool { return c == nil || ev.Seq >= c.Ev.Seq }

// robot returns the robot's cache entry, creating it (and evicting the least
// recently seen robot past MaxRobots). Called with h.mu held.
func (h *Hub) robot(id string) *robotState {
	if r := h.robots[id]; r != nil {
		return r
	}
	if len(h.robots) >= h.o.MaxRobots {
		var oldest *robotState
		for _, r := range h.robots {
			if oldest == nil || r.lastSeen.Before(oldest.lastSeen) {
				oldest = r
			}
		}
		h.evictRobot(oldest)
	}
	r := &robotState{id: id, alerts: map[string]*Entry{}, ring: newRing(h.o.RingEvents, h.o.RingBytes)}
	h.robots[id] = r
	return r
}

// session returns the session's cache entry, creating it. Called with h.mu held.
func (h *Hub) session(r *robotState, id string) *sessionState {
	if s := h.sessions[id]; s != nil {
		return s
	}
	s := &sessionState{id: id, robot: r.id, ring: newRing(h.o.RingEvents, h.o.RingBytes)}
	h.sessions[id] = s
	r.sessions = append(r.sessions, id)
	if len(r.sessions) > h.o.SessionsPerRobot {
		delete(h.sessions, r.sessions[0])
		r.sessions = r.sessions[1:]
	}
	return s
}

func (h *Hub) evictRobot(r *robotState) {
	for _, s := range r.sessions {
		delete(h.sessions, s)
	}
	delete(h.robots, r.id)
	h.o.Stats.Evicted.Add(1)
	h.log.Info("robot evicted from caches", "robot", r.id, "last_seen", r.lastSeen.UTC().Format(time.RFC3339))
}

// Clear handles an empty retained payload on topic tp: the retained message
// was deleted, so the matching cache entry goes too (a cleared session.state
// removes the session).
func (h *Hub) Clear(tp protocol.Topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.robots[tp.Robot]
	if r == nil {
		return
	}
	switch tp.Kind {
	case protocol.KindSessionState:
		if s := h.sessions[tp.Session]; s != nil && s.robot == r.id {
			delete(h.sessions, tp.Session)
			if i := indexOf(r.sessions, tp.Session); i >= 0 {
				r.sessions = append(r.sessions[:i], r.sessions[i+1:]...)
			}
		}
	case protocol.KindStatus:
		r.status = nil
	case protocol.KindMetrics:
		r.metrics = nil
	}
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

// deliver encodes e once per format in use in room and pushes it to every
// subscriber. Called with h.mu held, so every subscriber sees one order.
func (h *Hub) deliver(room string, e *Entry, ts time.Time, key string) {
	subs := h.rooms[room]
	if len(subs) == 0 {
		return
	}
	var frames [2]struct {
		f     Format
		frame []byte
	}
	var extra map[Format][]byte
	for s := range subs {
		f := s.Format()
		var frame []byte
		switch {
		case frames[0].f == f:
			frame = frames[0].frame
		case frames[1].f == f:
			frame = frames[1].frame
		case extra[f] != nil:
			frame = extra[f]
		default:
			b, err := f.Event(room, e.Ev, e.Raw)
			if err != nil {
				h.o.Stats.EncodeErrors.Add(1)
				continue
			}
			frame = b
			switch {
			case frames[0].f == nil:
				frames[0].f, frames[0].frame = f, b
			case frames[1].f == nil:
				frames[1].f, frames[1].frame = f, b
			default:
				if extra == nil {
					extra = map[Format][]byte{}
				}
				extra[f] = b
			}
		}
		s.Send(Message{Room: room, Type: e.Ev.Type, Key: key, Frame: frame, TS: ts})
	}
}

// Snapshot is what a subscribe answers with.
type Snapshot struct {
	Room      string
	Recovered bool
	Events    []*Entry
}

// Subscribe adds s to room after checking who against the room (spec §5)
// and calls answer with the snapshot, under the hub's lock, so the answer is
// queued before any live event of the room. sinceSeq < 0 means none.
// Subscribing to a room s is already in answers again with a fresh snapshot.
func (h *Hub) Subscribe(s Subscriber, who Authorizer, room string, sinceSeq int64, answer func(Snapshot)) error {
	kind, id, err := ParseRoom(room)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch kind {
	case "robot":
		if !who.CanRobot(id) {
			return ErrForbidden
		}
	case "session":
		if ss := h.sessions[id]; ss != nil {
			if !who.CanRobot(ss.robot) {
				return ErrForbidden
			}
		} else if !who.AllRobots() {
			return ErrForbidden
		}
	}
	mine := h.subs[s]
	if _, in := mine[room]; !in && len(mine) >= h.o.MaxRoomsPerClient {
		return ErrTooManyRooms
	}
	snap := h.snapshot(kind, id, sinceSeq, who)
	snap.Room = room
	answer(snap)
	if mine == nil {
		mine = map[string]struct{}{}
		h.subs[s] = mine
	}
	mine[room] = struct{}{}
	if h.rooms[room] == nil {
		h.rooms[room] = map[Subscriber]struct{}{}
	}
	h.rooms[room][s] = struct{}{}
	return nil
}

// snapshot builds a room's snapshot (spec §5). Called with h.mu held.
func (h *Hub) snapshot(kind, id string, since int64, who Authorizer) Snapshot {
	var out []*Entry
	switch kind {
	case "fleet":
		ids := make([]string, 0, len(h.robots))
		for rid, r := range h.robots {
			if r.status != nil && who.CanRobot(rid) {
				ids = append(ids, rid)
			}
		}
		sort.Strings(ids)
		for _, rid := range ids {
			out = append(out, h.robots[rid].status)
		}
		var running []*Entry
		for _, s := range h.sessions {
			if s.state != nil && s.state.Ev.Data.(protocol.SessionState).Status == protocol.StatusRunning && who.CanRobot(s.robot) {
				running = append(running, s.state)
			}
		}
		sort.Slice(running, func(i, j int) bool { return running[i].Ev.ID < running[j].Ev.ID })
		return Snapshot{Events: append(out, running...)}
	case "robot":
		r := h.robots[id]
		if r == nil {
			return Snapshot{}
		}
		if since >= 0 {
			if evs, ok := r.ring.since(since); ok {
				if r.metrics != nil && r.metrics.Ev.Seq > since {
					evs = append(evs, r.metrics)
					sortBySeq(evs)
				}
				return Snapshot{Recovered: true, Events: evs}
			}
		}
		if r.status != nil {
			out = append(out, r.status)
		}
		if r.metrics != nil {
			out = append(out, r.metrics)
		}
		alerts := make([]*Entry, 0, len(r.alerts))
		for _, a := range r.alerts {
			alerts = append(alerts, a)
		}
		sortBySeq(alerts)
		out = append(out, alerts...)
		for _, sid := range r.sessions {
			if s := h.sessions[sid]; s != nil && s.state != nil {
				out = append(out, s.state)
			}
		}
		return Snapshot{Events: out}
	case "session":
		s := h.sessions[id]
		if s == nil {
			return Snapshot{}
		}
		if since >= 0 {
			if evs, ok := s.ring.since(since); ok {
				if s.state != nil && s.state.Ev.Seq > since {
					evs = append(evs, s.state)
					sortBySeq(evs)
				}
				return Snapshot{Recovered: true, Events: evs}
			}
		}
		if s.state != nil {
			out = append(out, s.state)
		}
		return Snapshot{Events: append(out, s.ring.all()...)}
	}
	return Snapshot{}
}

// Unsubscribe removes s from room and reports whether it was in it.
func (h *Hub) Unsubscribe(s Subscriber, room string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	mine := h.subs[s]
	if _, in := mine[room]; !in {
		return false
	}
	delete(mine, room)
	h.leaveRoom(s, room)
	return true
}

// Leave removes s from every room (when its connection closes).
func (h *Hub) Leave(s Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for room := range h.subs[s] {
		h.leaveRoom(s, room)
	}
	delete(h.subs, s)
}

func (h *Hub) leaveRoom(s Subscriber, room string) {
	if m := h.rooms[room]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(h.rooms, room)
		}
	}
}

// RobotState returns the robot's last retained status state ("online",
// "offline") and whether the relay knows its status.
func (h *Hub) RobotState(id string) (state string, known bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.robots[id]
	if r == nil || r.status == nil {
		return "", false
	}
	return r.status.Ev.Data.(protocol.RobotStatus).State, true
}

// RobotInfo is one robot's entry in /api/v1/robots.
type RobotInfo struct {
	ID       string          `json:"id"`
	Status   json.RawMessage `json:"status"`
	Metrics  json.RawMessage `json:"metrics"`
	LastSeen time.Time       `json:"last_seen"`
}

// Robots returns the latest status and metrics of every known robot, by id.
func (h *Hub) Robots() []RobotInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]RobotInfo, 0, len(h.robots))
	for _, r := range h.robots {
		ri := RobotInfo{ID: r.id, LastSeen: r.lastSeen.UTC(), Status: json.RawMessage("null"), Metrics: json.RawMessage("null")}
		if r.status != nil {
			ri.Status = r.status.Raw
		}
		if r.metrics != nil {
			ri.Metrics = r.metrics.Raw
		}
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
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
	c := Counts{Rooms: len(h.rooms), Subscribers: len(h.subs), RobotsKnown: len(h.robots), Sessions: len(h.sessions)}
	for _, m := range h.subs {
		c.Subscriptions += len(m)
	}
	for _, r := range h.robots {
		if r.status != nil && r.status.Ev.Data.(protocol.RobotStatus).State == "online" {
			c.RobotsOnline++
		}
	}
	for _, s := range h.sessions {
		if s.state != nil && s.state.Ev.Data.(protocol.SessionState).Status == protocol.StatusRunning {
			c.SessionsRunning++
		}
	}
	return c
}

// SystemStatus publishes one system.status event into fleet.
func (h *Hub) SystemStatus() {
	c := h.Counts()
	relay := h.o.RelayStats()
	relay.UptimeS = h.o.Now().Sub(h.started).Seconds()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sysSeq++
	ev := protocol.NewEvent("relay", protocol.SystemStatus{
		RobotsOnline: c.RobotsOnline, RobotsKnown: c.RobotsKnown, SessionsRunning: c.SessionsRunning, Relay: relay})
	ev.Seq = h.sysSeq
	raw, err := json.Marshal(ev)
	if err != nil {
		h.o.Stats.EncodeErrors.Add(1)
		return
	}
	h.deliver(RoomFleet, &Entry{Ev: ev, Raw: raw}, ev.TS.Time, "")
}

// Sweep evicts robots not heard from for RobotTTL.
func (h *Hub) Sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	cutoff := h.o.Now().Add(-h.o.RobotTTL)
	for _, r := range h.robots {
		if r.lastSeen.Before(cutoff) {
			h.evictRobot(r)
		}
	}
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
