// Package metricshistory is the relay's short memory of every robot's
// hardware: a per-robot history of robot.metrics (the last 15 minutes by
// default, downsampled into fixed steps) for the dashboard's charts, and the
// latest values, state, firing alerts and running sessions of each robot for
// the fleet table and the per-robot Prometheus gauges.
//
// Everything is bounded: a byte budget per robot and in total, a cap on the
// robots and on the series per robot. Samples dropped to stay within a budget
// and robots evicted past the cap are counted (Stats); samples older than the
// window simply age out.
package metricshistory

import (
	"container/list"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
)

// Options configures a Store. Zero fields take the defaults named here,
// filled in by New.
type Options struct {
	// Window is how much history is kept per robot. Default 15m.
	Window time.Duration
	// Step is the resolution: the samples of one step are averaged into
	// one point. Default 5s (180 points in 15 minutes).
	Step time.Duration
	// RobotBytes caps one robot's history; past it the robot's oldest
	// points are dropped (counted). Default 32768.
	RobotBytes int
	// TotalBytes caps every robot's history together; past it the oldest
	// point of the least recently updated robot is dropped (counted).
	// Default 64 MiB.
	TotalBytes int
	// MaxRobots caps the robots known; past it the least recently updated
	// robot is forgotten (counted). Default 10000 (the relay passes
	// hub.max_robots).
	MaxRobots int
	// MaxSeries caps the series (cpu, mem, net, one per temperature sensor,
	// three per GPU) kept per robot; sensors past it are not charted.
	// Default 32.
	MaxSeries int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() {
	if o.Window <= 0 {
		o.Window = 15 * time.Minute
	}
	if o.Step <= 0 {
		o.Step = 5 * time.Second
	}
	if o.RobotBytes <= 0 {
		o.RobotBytes = 32 << 10
	}
	if o.TotalBytes <= 0 {
		o.TotalBytes = 64 << 20
	}
	if o.MaxRobots <= 0 {
		o.MaxRobots = 10000
	}
	if o.MaxSeries <= 0 {
		o.MaxSeries = 32
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Limits of what one robot may make the store hold, beyond the byte budgets.
const (
	maxSensors       = 8   // temperature sensors charted per robot
	maxGPUs          = 4   // GPUs charted per robot (the latest values keep maxGPUs too)
	maxNameLen       = 64  // longer sensor names are cut
	maxAlertsTracked = 256 // firing alerts counted per robot
	maxSessions      = 64  // running sessions tracked per robot
	// Approximate costs, in bytes, for the budgets.
	pointOverhead = 8 + 24 // the time and the value slice's header
	robotOverhead = 512    // the robot's own entry, latest values and maps
	seriesCost    = 16     // per series name, plus its length
)

// point is one step of a robot's history; v holds one value per series of
// the robot (NaN where a series had no sample), shorter when series were
// added later.
type point struct {
	t int64 // unix seconds of the step's start
	v []float32
}

func (p *point) bytes() int { return pointOverhead + 4*cap(p.v) }

// GPU is the latest reading of one GPU.
type GPU struct {
	Index       int     `json:"index"`
	UtilPercent float64 `json:"util"`
	MemPercent  float64 `json:"mem"`
	TempC       float64 `json:"temp"`
}

// Latest is what the store knows of one robot now: the fleet table's row
// and the per-robot gauges.
type Latest struct {
	ID string `json:"id"`
	// State is "online", "offline" or "" (no status seen); Since is the
	// time of the status event that set it.
	State string    `json:"state,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// MetricsAt is the ts of the latest robot.metrics; zero when none.
	MetricsAt     time.Time `json:"metrics_at,omitzero"`
	CPUPercent    float64   `json:"cpu"`
	MemPercent    float64   `json:"mem"`
	MemUsed       int64     `json:"mem_used"`
	MemTotal      int64     `json:"mem_total"`
	HottestC      float64   `json:"temp"`
	HottestSensor string    `json:"temp_sensor,omitempty"`
	GPUs          []GPU     `json:"gpus,omitempty"`
	RxBps         float64   `json:"rx_bps"`
	TxBps         float64   `json:"tx_bps"`
	SpoolDepth    int64     `json:"spool_depth"`
	// AlertsFiring and SessionsRunning are known only when the store is fed
	// alerts and session events (Observe); the dashboard counts them itself
	// from room fleet, so they are not in the JSON.
	AlertsFiring    int `json:"-"`
	SessionsRunning int `json:"-"`
}

type robot struct {
	id       string
	series   []string
	index    map[string]int
	points   []point // oldest first, whole steps only
	cur      accum   // the step being filled
	bytes    int     // this robot's cost against the budgets
	latest   Latest
	lastTS   time.Time // ts of the latest robot.metrics taken
	epoch    int64     // robot.status data.epoch, when hasEpoch
	hasEpoch bool
	alerts   map[string]struct{}
	runs     map[string]struct{}
	seen     time.Time // relay clock: last update of any kind
	el       *list.Element
}

// accum averages the samples of one step.
type accum struct {
	t   int64 // step start, unix seconds; 0 when empty
	sum []float64
	n   []uint16
}

// Stats are the store's sizes and drop counters.
type Stats struct {
	Robots int `json:"robots"`
	Points int `json:"points"`
	Bytes  int `json:"bytes"`
	// PointsDropped counts points dropped to stay within a byte budget
	// (not those that aged out of the window).
	PointsDropped int64 `json:"points_dropped"`
	// RobotsEvicted counts robots forgotten past MaxRobots.
	RobotsEvicted int64 `json:"robots_evicted"`
	// Late counts robot.metrics older than the robot's newest (reordering,
	// a clock that went back); they are not charted. The same sample
	// again is not counted.
	Late int64 `json:"late"`
	// Invalid counts payloads that did not decode.
	Invalid int64 `json:"invalid"`
}

// Store is the history of every robot. It is safe for concurrent use.
type Store struct {
	o Options

	mu     sync.Mutex // guards every field below
	robots map[string]*robot
	lru    *list.List // of *robot, most recently updated first
	bytes  int
	points int
	stats  Stats
}

// New returns a Store.
func New(o Options) *Store {
	o.setDefaults()
	return &Store{o: o, robots: map[string]*robot{}, lru: list.New()}
}

// Options returns the options in force (defaults filled in).
func (s *Store) Options() Options { return s.o }

// robotLocked returns id's entry, creating it and forgetting the least
// recently updated robot past MaxRobots. Called with s.mu held.
func (s *Store) robotLocked(id string) *robot {
	r := s.robots[id]
	if r == nil {
		for len(s.robots) >= s.o.MaxRobots {
			s.removeLocked(s.lru.Back().Value.(*robot))
			s.stats.RobotsEvicted++
		}
		r = &robot{id: id, index: map[string]int{}, latest: Latest{ID: id}, bytes: robotOverhead}
		r.el = s.lru.PushFront(r)
		s.robots[id] = r
		s.bytes += r.bytes
	} else {
		s.lru.MoveToFront(r.el)
	}
	r.seen = s.o.Now()
	return r
}

func (s *Store) removeLocked(r *robot) {
	s.lru.Remove(r.el)
	delete(s.robots, r.id)
	s.bytes -= r.bytes
	s.points -= len(r.points)
}

// Forget removes a robot (the hub evicted it).
func (s *Store) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.robots[id]; r != nil {
		s.removeLocked(r)
	}
}

// Sweep forgets robots not heard from for maxAge.
func (s *Store) Sweep(maxAge time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.o.Now().Add(-maxAge)
	for e := s.lru.Back(); e != nil; {
		r := e.Value.(*robot)
		if !r.seen.Before(cut) {
			return
		}
		e = e.Prev()
		s.removeLocked(r)
	}
}

// metricsEnvelope is the part of a robot.metrics envelope the store reads.
type metricsEnvelope struct {
	TS   time.Time `json:"ts"`
	Data struct {
		CPU struct {
			Percent float64 `json:"percent"`
		} `json:"cpu"`
		Memory struct {
			Total   int64   `json:"total"`
			Used    int64   `json:"used"`
			Percent float64 `json:"percent"`
		} `json:"memory"`
		Net struct {
			RxBps float64 `json:"rx_bps"`
			TxBps float64 `json:"tx_bps"`
		} `json:"net"`
		Temperatures []struct {
			Sensor  string  `json:"sensor"`
			Celsius float64 `json:"celsius"`
		} `json:"temperatures"`
		GPUs []struct {
			Index       int     `json:"index"`
			UtilPercent float64 `json:"util_percent"`
			MemUsed     int64   `json:"mem_used"`
			MemTotal    int64   `json:"mem_total"`
			TempC       float64 `json:"temp_c"`
		} `json:"gpus"`
		Agent struct {
			SpoolDepth int64 `json:"spool_depth"`
		} `json:"agent"`
	} `json:"data"`
}

// Metrics takes one robot.metrics envelope (raw JSON, already validated by
// the relay's ingest) of robot id.
func (s *Store) Metrics(id string, raw []byte) error {
	var env metricsEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		s.mu.Lock()
		s.stats.Invalid++
		s.mu.Unlock()
		return fmt.Errorf("metrics of %q: %w", id, err)
	}
	d := &env.Data
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.robotLocked(id)
	if env.TS.Equal(r.lastTS) {
		return nil // the same sample again (a retained redelivery, a poll that saw it already)
	}
	if env.TS.Before(r.lastTS) {
		s.stats.Late++
		return nil
	}
	r.lastTS = env.TS
	l := &r.latest
	l.MetricsAt = env.TS.UTC()
	l.CPUPercent, l.MemPercent, l.MemUsed, l.MemTotal = d.CPU.Percent, d.Memory.Percent, d.Memory.Used, d.Memory.Total
	l.RxBps, l.TxBps, l.SpoolDepth = d.Net.RxBps, d.Net.TxBps, d.Agent.SpoolDepth
	l.HottestC, l.HottestSensor = 0, ""
	for i, t := range d.Temperatures {
		if i == 0 || t.Celsius > l.HottestC {
			l.HottestC, l.HottestSensor = t.Celsius, clip(t.Sensor)
		}
	}
	l.GPUs = l.GPUs[:0]
	for _, g := range d.GPUs {
		if len(l.GPUs) == maxGPUs {
			break
		}
		if slices.ContainsFunc(l.GPUs, func(x GPU) bool { return x.Index == g.Index }) {
			continue // one reading per index: they name series and gauge labels
		}
		mem := 0.0
		if g.MemTotal > 0 {
			mem = 100 * float64(g.MemUsed) / float64(g.MemTotal)
		}
		l.GPUs = append(l.GPUs, GPU{Index: g.Index, UtilPercent: g.UtilPercent, MemPercent: mem, TempC: g.TempC})
	}

	step := int64(s.o.Step / time.Second)
	if step < 1 {
		step = 1
	}
	t := env.TS.Unix() / step * step
	if r.cur.t != 0 && t < r.cur.t {
		s.stats.Late++ // a newer ts in an older step: the robot's clock went back
		return nil
	}
	if r.cur.t != 0 && t > r.cur.t {
		s.closeStepLocked(r)
	}
	r.cur.t = t
	s.addLocked(r, "cpu", d.CPU.Percent)
	s.addLocked(r, "mem", d.Memory.Percent)
	s.addLocked(r, "net_rx", d.Net.RxBps)
	s.addLocked(r, "net_tx", d.Net.TxBps)
	for i, tc := range d.Temperatures {
		if i == maxSensors {
			break
		}
		s.addLocked(r, "temp:"+clip(tc.Sensor), tc.Celsius)
	}
	for _, g := range l.GPUs {
		p := fmt.Sprintf("gpu%d_", g.Index)
		s.addLocked(r, p+"util", g.UtilPercent)
		s.addLocked(r, p+"mem", g.MemPercent)
		s.addLocked(r, p+"temp", g.TempC)
	}
	return nil
}

func clip(s string) string {
	if len(s) > maxNameLen {
		return s[:maxNameLen]
	}
	return s
}

// addLocked adds one sample of series name to the robot's current step.
func (s *Store) addLocked(r *robot, name string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	i, ok := r.index[name]
	if !ok {
		if len(r.series) >= s.o.MaxSeries {
			return
		}
		i = len(r.series)
		r.series = append(r.series, name)
		r.index[name] = i
		c := seriesCost + len(name)
		r.bytes += c
		s.bytes += c
	}
	for len(r.cur.sum) <= i {
		r.cur.sum = append(r.cur.sum, 0)
		r.cur.n = append(r.cur.n, 0)
	}
	r.cur.sum[i] += v
	r.cur.n[i]++
}

// closeStepLocked turns the current step into a point and enforces the
// window and the budgets.
func (s *Store) closeStepLocked(r *robot) {
	p := r.cur.point()
	r.cur.t = 0
	clear(r.cur.sum)
	clear(r.cur.n)
	if p.t == 0 {
		return
	}
	r.points = append(r.points, p)
	r.bytes += p.bytes()
	s.bytes += p.bytes()
	s.points++
	cut := p.t - int64(s.o.Window/time.Second)
	for len(r.points) > 0 && r.points[0].t <= cut {
		s.dropOldestLocked(r)
	}
	for r.bytes > s.o.RobotBytes && len(r.points) > 0 {
		s.dropOldestLocked(r)
		s.stats.PointsDropped++
	}
	// Over the total: take from the robots updated longest ago, whose
	// points are the oldest, then from this robot itself.
	for s.bytes > s.o.TotalBytes {
		victim := s.stalestLocked(r)
		if victim == nil {
			victim = r
		}
		if len(victim.points) == 0 {
			break
		}
		s.dropOldestLocked(victim)
		s.stats.PointsDropped++
	}
}

// stalestLocked returns the least recently updated robot other than r that
// has points, looking at no more than 64 robots so that a store full of
// robots without history costs nothing; nil when none.
func (s *Store) stalestLocked(r *robot) *robot {
	n := 0
	for e := s.lru.Back(); e != nil && n < 64; e, n = e.Prev(), n+1 {
		if v := e.Value.(*robot); v != r && len(v.points) > 0 {
			return v
		}
	}
	return nil
}

func (s *Store) dropOldestLocked(r *robot) {
	b := r.points[0].bytes()
	r.points[0] = point{}
	r.points = r.points[1:]
	r.bytes -= b
	s.bytes -= b
	s.points--
}

func (a *accum) point() point {
	if a.t == 0 {
		return point{}
	}
	v := make([]float32, len(a.sum))
	some := false
	for i := range a.sum {
		if a.n[i] == 0 {
			v[i] = float32(math.NaN())
			continue
		}
		v[i] = float32(a.sum[i] / float64(a.n[i]))
		some = true
	}
	if !some {
		return point{}
	}
	return point{t: a.t, v: v}
}

// statusEnvelope is the part of a robot.status envelope the store reads.
type statusEnvelope struct {
	TS   time.Time `json:"ts"`
	Data struct {
		State string `json:"state"`
		Epoch *int64 `json:"epoch"`
	} `json:"data"`
}

// Status takes one robot.status envelope. A status carrying a lower
// data.epoch than the one in force is older (a Last Will of an earlier
// connection) and is ignored; without an epoch the last status received
// wins, as the broker orders them.
func (s *Store) Status(id string, raw []byte) error {
	var env statusEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		s.mu.Lock()
		s.stats.Invalid++
		s.mu.Unlock()
		return fmt.Errorf("status of %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.robotLocked(id)
	if env.Data.Epoch != nil {
		if r.hasEpoch && *env.Data.Epoch < r.epoch {
			return nil
		}
		r.epoch, r.hasEpoch = *env.Data.Epoch, true
	}
	if r.latest.State != env.Data.State || r.latest.Since.IsZero() {
		r.latest.State, r.latest.Since = env.Data.State, env.TS.UTC()
	}
	return nil
}

// Alert records a robot.alert: firing or resolved.
func (s *Store) Alert(id, alert string, firing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.robotLocked(id)
	if firing {
		if r.alerts == nil {
			r.alerts = map[string]struct{}{}
		}
		if len(r.alerts) < maxAlertsTracked {
			r.alerts[alert] = struct{}{}
		}
	} else {
		delete(r.alerts, alert)
	}
	r.latest.AlertsFiring = len(r.alerts)
}

// Session records whether a session of robot id is running.
func (s *Store) Session(id, session string, running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.robotLocked(id)
	if running {
		if r.runs == nil {
			r.runs = map[string]struct{}{}
		}
		if len(r.runs) < maxSessions {
			r.runs[session] = struct{}{}
		}
	} else {
		delete(r.runs, session)
	}
	r.latest.SessionsRunning = len(r.runs)
}

// Latest returns the latest values of every robot allowed by keep (nil:
// all), by id.
func (s *Store) Latest(keep func(id string) bool) []Latest {
	s.mu.Lock()
	out := make([]Latest, 0, len(s.robots))
	for id, r := range s.robots {
		if keep == nil || keep(id) {
			l := r.latest
			l.GPUs = append([]GPU(nil), l.GPUs...)
			out = append(out, l)
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// History is one robot's charted history: T holds the unix second of each
// point, Series one value per point for each series (NaN where missing).
type History struct {
	Robot  string
	Step   time.Duration
	Window time.Duration
	T      []int64
	Names  []string
	Series [][]float32
}

// History returns robot id's points from since (unix seconds, 0 = the whole
// window) on, including the step being filled, or false when the store
// knows nothing of id. A robot known by its status but without metrics yet
// (it just came online) has an empty history, not none.
func (s *Store) History(id string, since int64) (History, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.robots[id]
	if r == nil {
		return History{}, false
	}
	if r.lastTS.IsZero() {
		return History{Robot: id, Step: s.o.Step, Window: s.o.Window, T: []int64{}}, true
	}
	h := History{Robot: id, Step: s.o.Step, Window: s.o.Window, Names: append([]string(nil), r.series...)}
	pts := r.points
	if cur := r.cur.point(); cur.t != 0 {
		pts = append(pts[:len(pts):len(pts)], cur)
	}
	if len(pts) > 0 {
		if cut := pts[len(pts)-1].t - int64(s.o.Window/time.Second); since < cut {
			since = cut + 1
		}
	}
	first := sort.Search(len(pts), func(i int) bool { return pts[i].t >= since })
	pts = pts[first:]
	h.T = make([]int64, len(pts))
	h.Series = make([][]float32, len(h.Names))
	nan := float32(math.NaN())
	for j := range h.Series {
		col := make([]float32, len(pts))
		for i := range pts {
			if j < len(pts[i].v) {
				col[i] = pts[i].v[j]
			} else {
				col[i] = nan
			}
		}
		h.Series[j] = col
	}
	for i := range pts {
		h.T[i] = pts[i].t
	}
	return h, true
}

// Stats returns the sizes and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Robots, st.Points, st.Bytes = len(s.robots), s.points, s.bytes
	return st
}
