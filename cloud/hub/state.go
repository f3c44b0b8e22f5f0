package hub

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robotfleet/fleetlink/internal/dedup"
	"github.com/robotfleet/fleetlink/protocol"
)

// state is the hub's caches: per robot its status, latest metrics, firing
// alerts, recent sessions and ring; per (robot, session) the session's
// state and ring; the recent event ids. Every method is called with the
// hub's lock held.
type state struct {
	o     *Options
	stats *Stats
	log   *slog.Logger

	robots   map[string]*robotState
	byRobot  []*robotState // robots sorted by id, nil when robots changed: fleet snapshots come out ordered
	sessions map[sessKey]*sessionState
	byID     map[string][]string // session id → robots that have it, for session:<id> rooms
	seen     *dedup.Ring
	sysSeq   int64
	bytes    int // envelope bytes cached, over every robot (TotalBytes)
}

// sessKey names a session: it belongs to the robot that publishes it
// (spec §5), so two robots using one id have two sessions.
type sessKey struct{ robot, id string }

type robotState struct {
	id       string
	status   *Entry
	metrics  *Entry
	alerts   map[string]*Entry // firing alerts by name
	sessions []string          // recent session ids, oldest first, ≤ SessionsPerRobot
	ring     *ring             // everything but robot.metrics
	lastSeen time.Time
	bytes    int // envelope bytes cached for the robot and its sessions (RobotBytes)
}

type sessionState struct {
	id, robot string
	state     *Entry
	ring      *ring // session events except session.state
}

func (s *sessionState) bytes() int { return s.ring.bytes + size(s.state) }

func size(e *Entry) int {
	if e == nil {
		return 0
	}
	return len(e.Raw)
}

func newState(o *Options, stats *Stats, log *slog.Logger) *state {
	return &state{o: o, stats: stats, log: log, robots: map[string]*robotState{}, sessions: map[sessKey]*sessionState{},
		byID: map[string][]string{}, seen: dedup.New(o.DedupIDs)}
}

// ingest updates the caches with ev and returns its entry, or false when ev
// is a duplicate or a stale status.
func (st *state) ingest(ev *protocol.Event, raw []byte, retained bool) (*Entry, bool) {
	if !st.seen.Add(ev.ID) {
		st.stats.Duplicates.Add(1)
		return nil, false
	}
	if len(raw) > st.o.MaxTextBytes {
		if cev, craw, ok := clipText(raw, st.o.MaxTextBytes); ok {
			st.stats.TextClipped.Add(1)
			ev, raw = cev, craw
		}
	}
	e := &Entry{Ev: ev, Raw: raw}
	r := st.robot(ev.Robot)
	r.lastSeen = st.o.Now()
	if retained && ev.Type != protocol.TypeRobotMetrics {
		// The broker re-sent a retained event the relay had not seen: the
		// relay (re)subscribed, and events published while it was away may
		// be lost. (Latest-only metrics are not in the ring.)
		r.ring.gap()
	}
	delta := 0
	switch ev.Type {
	case protocol.TypeRobotStatus:
		// Ordered by the connection epoch when both carry one: a Last Will
		// of an older connection must not override a newer connection's
		// status. Otherwise not by seq: a Will is numbered when the
		// connection is made, before the online status that follows it,
		// and the broker publishes it last; the broker hands over a
		// robot's status messages in the order they took effect, so the
		// last one received is the truth.
		if r.status != nil {
			if old, ok := statusEpoch(r.status.Raw); ok {
				if cur, ok := statusEpoch(raw); ok && cur < old {
					st.stats.StaleStatus.Add(1)
					return nil, false
				}
			}
		}
		delta += size(e) - size(r.status)
		r.status = e
	case protocol.TypeRobotMetrics:
		if newer(r.metrics, ev) {
			delta += size(e) - size(r.metrics)
			r.metrics = e
		}
	case protocol.TypeRobotAlert:
		a := ev.Data.(protocol.RobotAlert)
		old := r.alerts[a.Alert]
		if a.State == "firing" {
			if len(r.alerts) < 256 || old != nil {
				delta += size(e) - size(old)
				r.alerts[a.Alert] = e
			}
		} else if old != nil {
			delta -= size(old)
			delete(r.alerts, a.Alert)
		}
	}
	if ev.Type != protocol.TypeRobotMetrics {
		delta += r.ring.add(e, retained)
	}
	if ev.Session != "" {
		s := st.session(r, ev.Session)
		if retained {
			s.ring.gap()
		}
		if ev.Type == protocol.TypeSessionState {
			if newer(s.state, ev) {
				delta += size(e) - size(s.state)
				s.state = e
			}
		} else {
			delta += s.ring.add(e, retained)
		}
	}
	st.charge(r, delta)
	st.enforce(r, ev.Session)
	return e, true
}

// charge adds delta bytes to r's and the total's accounts.
func (st *state) charge(r *robotState, delta int) {
	r.bytes += delta
	st.bytes += delta
	st.stats.CachedBytes.Add(int64(delta))
}

// enforce keeps r within RobotBytes (its oldest other sessions go first,
// then the oldest events of its rings) and the caches within TotalBytes
// (the least recently seen other robots go). Every eviction is counted.
func (st *state) enforce(r *robotState, keep string) {
	for r.bytes > st.o.RobotBytes {
		over := r.bytes - st.o.RobotBytes
		if i := slices.IndexFunc(r.sessions, func(id string) bool { return id != keep }); i >= 0 {
			st.dropSession(r, r.sessions[i])
		} else if freed := r.ring.trim(max(0, r.ring.bytes-over)); freed > 0 {
			st.charge(r, -freed)
		} else if s := st.sessions[sessKey{r.id, keep}]; s != nil && s.ring.bytes > 0 {
			st.charge(r, -s.ring.trim(max(0, s.ring.bytes-over)))
		} else if len(r.alerts) > 0 {
			var oldest *Entry
			for _, a := range r.alerts {
				if oldest == nil || a.Ev.Seq < oldest.Ev.Seq {
					oldest = a
				}
			}
			delete(r.alerts, oldest.Ev.Data.(protocol.RobotAlert).Alert)
			st.charge(r, -size(oldest))
		} else {
			break // what is left is the latest status, metrics and session state
		}
		st.stats.BudgetEvictions.Add(1)
	}
	for st.bytes > st.o.TotalBytes && len(st.robots) > 1 {
		var oldest *robotState
		for _, x := range st.robots {
			if x != r && (oldest == nil || x.lastSeen.Before(oldest.lastSeen)) {
				oldest = x
			}
		}
		st.evictRobot(oldest)
		st.stats.BudgetEvictions.Add(1)
	}
}

// clipText cuts every string in raw's data longer than limit bytes to
// limit (at a rune boundary) plus "…", so that one robot's free text
// (messages, stderr tails, titles) cannot make the caches huge. It returns
// the re-decoded event and false when nothing was that long.
func clipText(raw []byte, limit int) (*protocol.Event, []byte, bool) {
	var env map[string]any
	if json.Unmarshal(raw, &env) != nil {
		return nil, nil, false
	}
	clipped := false
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			if len(x) > limit {
				clipped = true
				cut := limit
				for cut > 0 && !utf8.RuneStart(x[cut]) {
					cut--
				}
				return x[:cut] + "…"
			}
		case map[string]any:
			for k, y := range x {
				x[k] = walk(y)
			}
		case []any:
			for i, y := range x {
				x[i] = walk(y)
			}
		}
		return v
	}
	env["data"] = walk(env["data"])
	if !clipped {
		return nil, nil, false
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, nil, false
	}
	ev, err := protocol.Decode(b)
	if err != nil {
		return nil, nil, false
	}
	return ev, b, true
}

// statusEpoch reads data.epoch of a robot.status envelope (the agent's
// connection number, spec §4 extension), if it has one.
func statusEpoch(raw []byte) (int64, bool) {
	var v struct {
		Data struct {
			Epoch *int64 `json:"epoch"`
		} `json:"data"`
	}
	if json.Unmarshal(raw, &v) != nil || v.Data.Epoch == nil {
		return 0, false
	}
	return *v.Data.Epoch, true
}

// newer reports whether ev may replace the cached c: a late retained
// redelivery must not roll a cache back.
func newer(c *Entry, ev *protocol.Event) bool { return c == nil || ev.Seq >= c.Ev.Seq }

// robot returns the robot's cache entry, creating it (and evicting the least
// recently seen robot past MaxRobots).
func (st *state) robot(id string) *robotState {
	if r := st.robots[id]; r != nil {
		return r
	}
	if len(st.robots) >= st.o.MaxRobots {
		var oldest *robotState
		for _, r := range st.robots {
			if oldest == nil || r.lastSeen.Before(oldest.lastSeen) {
				oldest = r
			}
		}
		st.evictRobot(oldest)
	}
	r := &robotState{id: id, alerts: map[string]*Entry{}, ring: newRing(st.o.RingEvents, st.o.RingBytes)}
	st.robots[id] = r
	st.byRobot = nil
	return r
}

// sorted returns the robots in id order, sorting them again only after a
// robot came or went (rare), not for every fleet snapshot.
func (st *state) sorted() []*robotState {
	if st.byRobot == nil && len(st.robots) > 0 {
		st.byRobot = make([]*robotState, 0, len(st.robots))
		for _, r := range st.robots {
			st.byRobot = append(st.byRobot, r)
		}
		slices.SortFunc(st.byRobot, func(a, b *robotState) int { return strings.Compare(a.id, b.id) })
	}
	return st.byRobot
}

// session returns the robot's session id, creating it.
func (st *state) session(r *robotState, id string) *sessionState {
	k := sessKey{r.id, id}
	if s := st.sessions[k]; s != nil {
		return s
	}
	s := &sessionState{id: id, robot: r.id, ring: newRing(st.o.RingEvents, st.o.RingBytes)}
	st.sessions[k] = s
	st.byID[id] = append(st.byID[id], r.id)
	r.sessions = append(r.sessions, id)
	if len(r.sessions) > st.o.SessionsPerRobot {
		st.dropSession(r, r.sessions[0])
	}
	return s
}

// dropSession forgets the robot's session id.
func (st *state) dropSession(r *robotState, id string) {
	if st.sessions[sessKey{r.id, id}] == nil {
		return
	}
	st.charge(r, -st.sessions[sessKey{r.id, id}].bytes())
	delete(st.sessions, sessKey{r.id, id})
	if rs := removeString(st.byID[id], r.id); len(rs) > 0 {
		st.byID[id] = rs
	} else {
		delete(st.byID, id)
	}
	r.sessions = removeString(r.sessions, id)
}

func removeString(ss []string, s string) []string {
	if i := slices.Index(ss, s); i >= 0 {
		return slices.Delete(ss, i, i+1)
	}
	return ss
}

func (st *state) evictRobot(r *robotState) {
	for _, s := range slices.Clone(r.sessions) {
		st.dropSession(r, s)
	}
	st.charge(r, -r.bytes)
	delete(st.robots, r.id)
	st.byRobot = nil
	st.stats.Evicted.Add(1)
	st.log.Info("robot evicted from caches", "robot", r.id, "last_seen", r.lastSeen.UTC().Format(time.RFC3339))
}

// clear handles an empty retained payload on topic tp: the retained message
// was deleted, so the matching cache entry goes too (a cleared session.state
// removes the session).
func (st *state) clear(tp protocol.Topic) {
	r := st.robots[tp.Robot]
	if r == nil {
		return
	}
	switch tp.Kind {
	case protocol.KindSessionState:
		st.dropSession(r, tp.Session)
	case protocol.KindStatus:
		st.charge(r, -size(r.status))
		r.status = nil
	case protocol.KindMetrics:
		st.charge(r, -size(r.metrics))
		r.metrics = nil
	}
}

// markGap moves the coverage mark of robot's rings ("" means every robot).
func (st *state) markGap(robot string) {
	for _, r := range st.robots {
		if robot != "" && r.id != robot {
			continue
		}
		r.ring.gap()
		for _, sid := range r.sessions {
			if s := st.sessions[sessKey{r.id, sid}]; s != nil {
				s.ring.gap()
			}
		}
	}
}

// authorize checks who against a room (spec §5).
func (st *state) authorize(kind, id string, who Authorizer) error {
	switch kind {
	case "robot":
		if !who.CanRobot(id) {
			return ErrForbidden
		}
	case "session":
		// Refused only when the id is known for robots none of which the
		// grant covers; an unseen session may be subscribed by anyone, who
		// then receives nothing from robots outside the grant.
		robots := st.byID[id]
		if len(robots) == 0 {
			return nil
		}
		for _, r := range robots {
			if who.CanRobot(r) {
				return nil
			}
		}
		return ErrForbidden
	}
	return nil
}

// snapshot builds a room's snapshot (spec §5) from references.
func (st *state) snapshot(kind, id string, since int64, who Authorizer) Snapshot {
	snap := st.build(kind, id, since, who)
	if kind != "fleet" {
		snap.fleet = -1 // built in order
	}
	return snap
}

func (st *state) build(kind, id string, since int64, who Authorizer) Snapshot {
	var out []*Entry
	switch kind {
	case "fleet":
		for _, r := range st.sorted() {
			if r.status != nil && who.CanRobot(r.id) {
				out = append(out, r.status)
			}
		}
		n := len(out)
		for _, s := range st.sessions {
			if s.state != nil && s.state.Ev.Data.(protocol.SessionState).Status == protocol.StatusRunning && who.CanRobot(s.robot) {
				out = append(out, s.state)
			}
		}
		// Firing alerts too (an extension of spec §5): the room carries
		// robot.alert live, and a fleet view opened later must count the
		// alerts already firing, not only those that fire after it joined.
		for rid, r := range st.robots {
			if who.CanRobot(rid) {
				for _, a := range r.alerts {
					out = append(out, a)
				}
			}
		}
		return Snapshot{Events: out, fleet: n}
	case "robot":
		r := st.robots[id]
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
			if s := st.sessions[sessKey{r.id, sid}]; s != nil && s.state != nil {
				out = append(out, s.state)
			}
		}
		return Snapshot{Events: out}
	case "session":
		// One block per granted robot that has the id, by robot id.
		robots := slices.Clone(st.byID[id])
		slices.Sort(robots)
		recovered := since >= 0 && len(robots) > 0
		var replay []*Entry
		for _, rid := range robots {
			s := st.sessions[sessKey{rid, id}]
			if s == nil || !who.CanRobot(rid) {
				continue
			}
			if recovered {
				if evs, ok := s.ring.since(since); ok {
					if s.state != nil && s.state.Ev.Seq > since {
						evs = append(evs, s.state)
						sortBySeq(evs)
					}
					replay = append(replay, evs...)
				} else {
					recovered = false
				}
			}
			if s.state != nil {
				out = append(out, s.state)
			}
			out = append(out, s.ring.all()...)
		}
		if recovered {
			return Snapshot{Recovered: true, Events: replay}
		}
		return Snapshot{Events: out}
	}
	return Snapshot{}
}

// Order sorts a fleet snapshot (statuses by robot id, then running
// sessions by event id); other snapshots are built in order. Call it
// outside the hub's lock: the entries are immutable.
func (s *Snapshot) Order() {
	if s.fleet < 0 {
		return
	}
	// The statuses, Events[:fleet], come from build in robot order already.
	slices.SortFunc(s.Events[s.fleet:], func(a, b *Entry) int { return strings.Compare(a.Ev.ID, b.Ev.ID) })
	s.fleet = -1
}

func (st *state) robotState(id string) (string, bool) {
	r := st.robots[id]
	if r == nil || r.status == nil {
		return "", false
	}
	return r.status.Ev.Data.(protocol.RobotStatus).State, true
}

func (st *state) sessionRobots(id string) []string { return slices.Clone(st.byID[id]) }

// RobotInfo is one robot's entry in /api/v1/robots.
type RobotInfo struct {
	ID       string          `json:"id"`
	Status   json.RawMessage `json:"status"`
	Metrics  json.RawMessage `json:"metrics"`
	LastSeen time.Time       `json:"last_seen"`
}

func (st *state) robotInfos() []RobotInfo {
	out := make([]RobotInfo, 0, len(st.robots))
	for _, r := range st.robots {
		ri := RobotInfo{ID: r.id, LastSeen: r.lastSeen.UTC(), Status: json.RawMessage("null"), Metrics: json.RawMessage("null")}
		if r.status != nil {
			ri.Status = r.status.Raw
		}
		if r.metrics != nil {
			ri.Metrics = r.metrics.Raw
		}
		out = append(out, ri)
	}
	slices.SortFunc(out, func(a, b RobotInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// counts fills the robot and session counts of c, of the robots who may
// see (nil: all).
func (st *state) counts(c *Counts, who Authorizer) {
	all := who == nil || who.AllRobots()
	for _, r := range st.robots {
		if !all && !who.CanRobot(r.id) {
			continue
		}
		c.RobotsKnown++
		if r.status != nil && r.status.Ev.Data.(protocol.RobotStatus).State == "online" {
			c.RobotsOnline++
		}
	}
	for k, s := range st.sessions {
		if !all && !who.CanRobot(k.robot) {
			continue
		}
		c.Sessions++
		if s.state != nil && s.state.Ev.Data.(protocol.SessionState).Status == protocol.StatusRunning {
			c.SessionsRunning++
		}
	}
}

// sweep evicts robots not heard from for RobotTTL.
func (st *state) sweep() {
	cutoff := st.o.Now().Add(-st.o.RobotTTL)
	for _, r := range st.robots {
		if r.lastSeen.Before(cutoff) {
			st.evictRobot(r)
		}
	}
}
