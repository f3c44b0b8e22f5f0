package metricshistory_test

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/metricshistory"
	"github.com/robotfleet/fleetlink/protocol"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// metrics returns a valid robot.metrics envelope of robot at ts.
func metrics(t testing.TB, robot string, ts time.Time, cpu float64, sensors int, gpus int) []byte {
	t.Helper()
	m := protocol.RobotMetrics{
		CPU:    protocol.CPU{Percent: cpu, PerCore: []float64{cpu}},
		Memory: protocol.Memory{Total: 1000, Used: 250, Available: 750, Percent: 25},
		Net:    protocol.Net{RxBps: 100, TxBps: 200},
		Disks:  []protocol.Disk{}, Temperatures: []protocol.Temperature{}, GPUs: []protocol.GPU{},
	}
	for i := range sensors {
		m.Temperatures = append(m.Temperatures, protocol.Temperature{Sensor: fmt.Sprintf("zone%d", i), Celsius: 40 + float64(i)})
	}
	for i := range gpus {
		m.GPUs = append(m.GPUs, protocol.GPU{Index: i, Name: "Orin", UtilPercent: 50, MemUsed: 1, MemTotal: 4, TempC: 60})
	}
	ev := protocol.NewEvent(robot, m)
	ev.TS = protocol.Time{Time: ts}
	ev.Seq = ts.Unix()
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	return b
}

func status(t testing.TB, robot, state string, ts time.Time, epoch *int64) []byte {
	t.Helper()
	st := protocol.RobotStatus{State: state, AgentVersion: "1", StartedAt: protocol.Time{Time: ts}}
	if state == "offline" {
		st.Reason = "lost"
	}
	ev := protocol.NewEvent(robot, st)
	ev.TS = protocol.Time{Time: ts}
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	if epoch == nil {
		return b
	}
	// data.epoch is an optional field another part of the system adds.
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	m["data"].(map[string]any)["epoch"] = *epoch
	b, err = json.Marshal(m)
	require.NoError(t, err)
	return b
}

func TestStepsAverageSamples(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: 5 * time.Second})
	for i := range 10 { // 12:00:00 … 12:00:09: two steps
		require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0.Add(time.Duration(i)*time.Second), float64(i), 1, 0)))
	}
	h, ok := s.History("r-1", 0)
	require.True(t, ok)
	require.Equal(t, []int64{t0.Unix(), t0.Unix() + 5}, h.T)
	require.Equal(t, []string{"cpu", "mem", "net_rx", "net_tx", "temp:zone0"}, h.Names)
	require.InDelta(t, 2.0, h.Series[0][0], 1e-6, "mean of 0..4")
	require.InDelta(t, 7.0, h.Series[0][1], 1e-6, "the step being filled is served too: mean of 5..9")

	_, ok = s.History("r-2", 0)
	require.False(t, ok, "no metrics of r-2")
	h, _ = s.History("r-1", t0.Unix()+1)
	require.Equal(t, []int64{t0.Unix() + 5}, h.T, "since")
}

func TestRedeliveredAndOlderMetricsAreNotCharted(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: time.Second})
	b := metrics(t, "r-1", t0.Add(2*time.Second), 10, 0, 0)
	require.NoError(t, s.Metrics("r-1", b))
	require.NoError(t, s.Metrics("r-1", b))                                                  // a retained redelivery
	require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0, 90, 0, 0)))                    // older
	require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0.Add(3*time.Second), 20, 0, 0))) // newer
	h, _ := s.History("r-1", 0)
	require.Equal(t, []int64{t0.Unix() + 2, t0.Unix() + 3}, h.T)
	require.Equal(t, []float32{10, 20}, h.Series[0])
	require.EqualValues(t, 1, s.Stats().Late, "the older sample; a repeat is not late")
	require.InDelta(t, 20, s.Latest(nil)[0].CPUPercent, 1e-9)
	require.Error(t, s.Metrics("r-1", []byte("{")))
	require.EqualValues(t, 1, s.Stats().Invalid)
}

func TestWindowAgesPointsOut(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Window: time.Minute, Step: 5 * time.Second, RobotBytes: 1 << 20})
	for i := range 600 { // 10 minutes at 1 Hz
		require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0.Add(time.Duration(i)*time.Second), 1, 0, 0)))
	}
	h, _ := s.History("r-1", 0)
	require.LessOrEqual(t, len(h.T), 13, "a minute of 5 s steps, plus the one being filled")
	require.GreaterOrEqual(t, len(h.T), 12)
	require.Greater(t, h.T[0], t0.Unix()+600-61)
	require.Zero(t, s.Stats().PointsDropped, "ageing out is not a drop")
}

func TestRobotBudget(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: time.Second, RobotBytes: 4096})
	for i := range 900 {
		require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0.Add(time.Duration(i)*time.Second), 1, 4, 2)))
	}
	st := s.Stats()
	require.LessOrEqual(t, st.Bytes, 4096)
	require.Positive(t, st.PointsDropped, "dropped points are counted")
	h, _ := s.History("r-1", 0)
	require.Equal(t, t0.Unix()+899, h.T[len(h.T)-1], "the newest points are kept")
	require.Len(t, h.Names, 4+4+6)
}

func TestTotalBudgetAndMaxRobots(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: time.Second, RobotBytes: 8192, TotalBytes: 64 << 10, MaxRobots: 50})
	for i := range 120 {
		for r := range 40 {
			id := fmt.Sprintf("r-%d", r)
			require.NoError(t, s.Metrics(id, metrics(t, id, t0.Add(time.Duration(i)*time.Second), 1, 1, 0)))
		}
	}
	st := s.Stats()
	require.Equal(t, 40, st.Robots)
	require.LessOrEqual(t, st.Bytes, 64<<10)
	require.Positive(t, st.PointsDropped, "points dropped for the total budget are counted")
	for r := range 40 {
		h, _ := s.History(fmt.Sprintf("r-%d", r), 0)
		require.NotEmpty(t, h.T, "every robot keeps its newest points")
		require.Equal(t, t0.Unix()+119, h.T[len(h.T)-1])
	}

	for r := 40; r < 60; r++ {
		id := fmt.Sprintf("r-%d", r)
		require.NoError(t, s.Metrics(id, metrics(t, id, t0, 1, 1, 0)))
	}
	st = s.Stats()
	require.Equal(t, 50, st.Robots)
	require.EqualValues(t, 10, st.RobotsEvicted)
	require.Len(t, s.Latest(nil), 50)
	_, ok := s.History("r-0", 0)
	require.False(t, ok, "the least recently updated robots went first")
}

func TestSeriesAddedLaterAreNullBefore(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: time.Second})
	require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0, 1, 0, 0)))
	require.NoError(t, s.Metrics("r-1", metrics(t, "r-1", t0.Add(time.Second), 1, 0, 1)))
	h, _ := s.History("r-1", 0)
	i := -1
	for j, n := range h.Names {
		if n == "gpu0_util" {
			i = j
		}
	}
	require.GreaterOrEqual(t, i, 0, "%v", h.Names)
	require.True(t, math.IsNaN(float64(h.Series[i][0])))
	require.InDelta(t, 50, h.Series[i][1], 1e-6)
	l := s.Latest(nil)[0]
	require.Equal(t, []metricshistory.GPU{{Index: 0, UtilPercent: 50, MemPercent: 25, TempC: 60}}, l.GPUs)
}

func TestStatusOrderedByEpoch(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{})
	e := func(n int64) *int64 { return &n }
	state := func() string { return s.Latest(nil)[0].State }

	require.NoError(t, s.Status("r-1", status(t, "r-1", "online", t0, e(3))))
	require.NoError(t, s.Status("r-1", status(t, "r-1", "offline", t0.Add(time.Second), e(2))))
	require.Equal(t, "online", state(), "the Will of an older connection does not override")
	require.Equal(t, t0, s.Latest(nil)[0].Since)
	require.NoError(t, s.Status("r-1", status(t, "r-1", "offline", t0.Add(2*time.Second), e(3))))
	require.Equal(t, "offline", state(), "the same epoch's Will does")
	require.NoError(t, s.Status("r-1", status(t, "r-1", "online", t0.Add(3*time.Second), nil)))
	require.Equal(t, "online", state(), "without an epoch the last status wins")
	require.Equal(t, t0.Add(3*time.Second), s.Latest(nil)[0].Since)
}

func TestAlertsAndSessions(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{})
	s.Alert("r-1", "cpu_temperature_high", true)
	s.Alert("r-1", "disk_full", true)
	s.Alert("r-1", "disk_full", false)
	s.Session("r-1", "s-1", true)
	s.Session("r-1", "s-2", true)
	s.Session("r-1", "s-1", false)
	l := s.Latest(nil)[0]
	require.Equal(t, 1, l.AlertsFiring)
	require.Equal(t, 1, l.SessionsRunning)
	s.Forget("r-1")
	require.Empty(t, s.Latest(nil))
}

type grant []string

func (g grant) CanRobot(id string) bool {
	for _, r := range g {
		if r == id {
			return true
		}
	}
	return false
}
func (g grant) AllRobots() bool { return false }

func TestAPI(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: time.Second})
	for _, id := range []string{"r-1", "r-2"} {
		require.NoError(t, s.Metrics(id, metrics(t, id, t0, 10, 1, 0)))
		require.NoError(t, s.Metrics(id, metrics(t, id, t0.Add(time.Second), 20, 1, 0)))
	}
	api := metricshistory.NewAPI(s, func(r *http.Request) (metricshistory.Grant, error) {
		if r.Header.Get("Authorization") != "Bearer good" {
			return nil, fmt.Errorf("invalid token")
		}
		return grant{"r-1"}, nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/robots/{id}/metrics", api.History)
	mux.HandleFunc("GET /api/v1/fleet/metrics", api.Fleet)
	get := func(path, tok string) (int, string) {
		req := httptest.NewRequest("GET", path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	code, body := get("/api/v1/robots/r-1/metrics", "good")
	require.Equal(t, 200, code, body)
	var h struct {
		Robot  string                `json:"robot"`
		StepS  float64               `json:"step_s"`
		T      []int64               `json:"t"`
		Series map[string][]*float64 `json:"series"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &h), body)
	require.Equal(t, "r-1", h.Robot)
	require.Equal(t, []int64{t0.Unix(), t0.Unix() + 1}, h.T)
	require.Equal(t, 20.0, *h.Series["cpu"][1])

	code, body = get("/api/v1/robots/r-2/metrics", "good")
	require.Equal(t, 403, code, "r-2 is outside the token's robots claim: %s", body)
	code, _ = get("/api/v1/robots/r-1/metrics", "")
	require.Equal(t, 401, code)
	code, _ = get("/api/v1/robots/r-1/metrics", "bad")
	require.Equal(t, 401, code)
	code, _ = get("/api/v1/robots/r-1/metrics?since=x", "good")
	require.Equal(t, 400, code)
	code, _ = get("/api/v1/robots/r%2B1/metrics", "good")
	require.Equal(t, 400, code)

	code, body = get("/api/v1/fleet/metrics", "good")
	require.Equal(t, 200, code)
	var f struct {
		Robots []metricshistory.Latest `json:"robots"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &f))
	require.Len(t, f.Robots, 1, "only the granted robot is listed: %s", body)
	require.Equal(t, "r-1", f.Robots[0].ID)
	require.InDelta(t, 20, f.Robots[0].CPUPercent, 1e-9)

	req := httptest.NewRequest("GET", "/api/v1/fleet/metrics", nil)
	req.Header.Set("Authorization", "Bearer good")
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	require.Equal(t, "gzip", w.Header().Get("Content-Encoding"))
	zr, err := gzip.NewReader(w.Body)
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(zr).Decode(&f))
	require.Len(t, f.Robots, 1)

	api = metricshistory.NewAPI(s, nil) // auth off
	w = httptest.NewRecorder()
	req = httptest.NewRequest("GET", "/api/v1/robots/r-3/metrics", nil)
	req.SetPathValue("id", "r-3")
	api.History(w, req)
	require.Equal(t, 404, w.Code)
}

// BenchmarkMetrics measures taking one robot.metrics sample (decode + step).
func BenchmarkMetrics(b *testing.B) {
	s := metricshistory.New(metricshistory.Options{})
	raws := make([][]byte, 1000)
	for i := range raws {
		raws[i] = metrics(b, "r-1", t0.Add(time.Duration(i)*time.Second), 1, 4, 1)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_ = s.Metrics(fmt.Sprintf("r-%d", i%1000), raws[(i/1000)%len(raws)])
	}
}

// A robot known by its status but without metrics yet (it just came
// online) has an empty history, so a dashboard that opens it gets 200, not
// 404; a robot the store does not know is still 404.
func TestKnownRobotWithoutMetricsHasAnEmptyHistory(t *testing.T) {
	s := metricshistory.New(metricshistory.Options{Step: 5 * time.Second})
	require.NoError(t, s.Status("r-1", status(t, "r-1", "online", time.Now(), nil)))
	h, found := s.History("r-1", 0)
	require.True(t, found)
	require.Empty(t, h.T)
	_, found = s.History("r-9", 0)
	require.False(t, found)
}
