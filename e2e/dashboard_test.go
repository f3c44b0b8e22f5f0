package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/protocol"
)

// An operator opens the dashboard in a real browser, finds the robot in the
// fleet table, sees its numbers and charts, starts an optimization and
// watches it complete.
func TestDashboardInBrowser(t *testing.T) {
	s := startRelay(t)
	s.startAgent(t, "r-web-1")
	runDashboard(t, "http://"+s.httpAddr+"/", "r-web-1", "operator")
}

// The same with auth on: the page takes a token from the link (#token=…, as
// fleetctl token prints it) and passes it to /ws and the history API. An
// operator runs a session; a viewer sees the robot and its charts but no
// start form and no cancel.
func TestDashboardWithToken(t *testing.T) {
	const secret = "e2e-secret"
	s := startRelay(t, "FLEET_RELAY_AUTH_SECRET="+secret)
	s.startAgent(t, "r-web-2")
	// Without a token the relay refuses the WebSocket before the upgrade.
	resp, err := http.Get("http://" + s.httpAddr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ws without a token: %d, want 401", resp.StatusCode)
	}
	runDashboard(t, "http://"+s.httpAddr+"/#token="+mintToken(t, secret, "operator", "r-web-*"), "r-web-2", "operator")
	res := runDashboard(t, "http://"+s.httpAddr+"/#token="+mintToken(t, secret, "viewer", "r-web-*"), "r-web-2", "viewer")
	if res["start_visible"] != false || res["cancel_visible"] != 0.0 {
		t.Fatalf("a viewer sees the start form (%v) or cancel buttons (%v)", res["start_visible"], res["cancel_visible"])
	}
}

func mintToken(t *testing.T, secret, role, robots string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "fleetctl"), "token", "--secret", secret,
		"--role", role, "--robots", robots, "--ttl", "10m").Output()
	if err != nil {
		t.Fatalf("fleetctl token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// browserReady fails the test when the browser tests cannot run here.
func browserReady(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join("..", "scripts", "browser", "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run scripts/test-deps.sh (%v)", err)
	}
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Fatalf("chromium is not installed: run scripts/test-deps.sh (apt-get install chromium)")
	}
}

// screenshotDir is where the browser scripts save their screenshots:
// E2E_SCREENSHOT_DIR when set (docs/ keeps the README's), else a temp dir.
func screenshotDir(t *testing.T) string {
	if dir := os.Getenv("E2E_SCREENSHOT_DIR"); dir != "" {
		return dir
	}
	return t.TempDir()
}

// runBrowser runs a script of scripts/browser and returns its JSON line.
func runBrowser(t *testing.T, script string, args ...string) map[string]any {
	t.Helper()
	browserReady(t)
	cmd := exec.Command("node", append([]string{filepath.Join("..", "scripts", "browser", script)}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var res map[string]any
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), &res); jerr != nil {
		t.Fatalf("browser script %s: %v (%v)\n%s", script, err, jerr, out)
	}
	t.Logf("%s: %s", script, lines[len(lines)-1])
	if res["ok"] != true {
		t.Fatalf("browser (%s): %v", script, res["error"])
	}
	if errs, _ := res["console_errors"].([]any); len(errs) > 0 {
		t.Fatalf("%d console errors in the page (a CSP violation is one), first: %q", len(errs), errs[0])
	}
	return res
}

// runDashboard drives scripts/browser/dashboard.js against url.
func runDashboard(t *testing.T, url, robot, mode string) map[string]any {
	t.Helper()
	res := runBrowser(t, "dashboard.js", url, robot, "mlp_opset17.onnx", screenshotDir(t), mode)
	if n, _ := res["charts"].(float64); n < 2 {
		t.Fatalf("robot view shows %v charts, want the CPU/memory and network charts at least", res["charts"])
	}
	if mode == "operator" {
		result, _ := res["result"].(map[string]any)
		m, _ := result["metrics"].(map[string]any)
		if r, _ := m["compression_ratio"].(float64); r < 2 {
			t.Fatalf("result shown in the page has compression_ratio %v: %v", m["compression_ratio"], result)
		}
		if row, _ := res["session_row"].(string); !strings.Contains(row, "completed") || !strings.Contains(row, "compression_ratio") {
			t.Fatalf("session row %q lacks its status or result metrics", row)
		}
	}
	return res
}

// fleetSim is a simulated fleet: robots that publish status, metrics,
// alerts and sessions over MQTT to the relay's embedded broker, as real
// agents would, and answer cancel_session. Real agents are too heavy for
// 1,000 robots on one test machine.
type fleetSim struct {
	t      *testing.T
	c      mqtt.Client
	topics protocol.Topics
	n      int

	mu        sync.Mutex // guards the fields below
	seq       map[string]int64
	running   map[string]*simSession // robot → its running session
	cancelled map[string]string      // session → robot, cancelled through a command
}

type simSession struct {
	id      string
	percent float64
	created protocol.Time
	started protocol.Time
}

func simRobot(i int) string { return fmt.Sprintf("r-%04d", i) }

func newFleetSim(t *testing.T, broker string, n int) *fleetSim {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("fleet-sim").SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetMaxResumePubInFlight(1000)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("fleet sim connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	f := &fleetSim{t: t, c: c, topics: protocol.MustTopics(""), n: n, seq: map[string]int64{},
		running: map[string]*simSession{}, cancelled: map[string]string{}}
	tok := c.Subscribe(f.topics.Prefix()+"/v1/robots/+/commands", 1, f.onCommand)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("fleet sim subscribe: %v", tok.Error())
	}
	return f
}

// publish sends one event of robot, QoS and retain as the contract says.
func (f *fleetSim) publish(robot, session string, d protocol.Data, edit func(*protocol.Event)) {
	f.mu.Lock()
	f.seq[robot]++
	ev := protocol.NewEvent(robot, d)
	ev.Session = session
	ev.Seq = f.seq[robot]
	f.mu.Unlock()
	if edit != nil {
		edit(ev)
	}
	b, err := protocol.Encode(ev)
	if err != nil {
		f.t.Errorf("encode %s: %v", ev.Type, err)
		return
	}
	topic, _ := f.topics.For(ev)
	info, _ := protocol.Lookup(ev.Type)
	tok := f.c.Publish(topic, info.QoS, info.Retained, b)
	if info.QoS > 0 {
		tok.WaitTimeout(10 * time.Second)
	}
}

func simMetrics(i int, rng *rand.Rand) protocol.RobotMetrics {
	cpu := float64(i%100) + rng.Float64()*0.9
	m := protocol.RobotMetrics{
		CPU:    protocol.CPU{Percent: cpu, PerCore: []float64{cpu, cpu}, Load1: 1, Load5: 1, Load15: 1},
		Memory: protocol.Memory{Total: 8 << 30, Used: int64(i%90+5) << 26, Available: 4 << 30, Percent: float64(i%90+5) * 100 / 128},
		Disks:  []protocol.Disk{{Mount: "/", Total: 64 << 30, Used: 20 << 30, Percent: 31.25}},
		Net:    protocol.Net{RxBps: 1000 + rng.Float64()*5000, TxBps: 500 + rng.Float64()*2000},
		Temperatures: []protocol.Temperature{{Sensor: "cpu-thermal", Celsius: 40 + float64(i%50) + rng.Float64()},
			{Sensor: "soc-thermal", Celsius: 38 + rng.Float64()*5}},
		GPUs:    []protocol.GPU{},
		UptimeS: 1000, Agent: protocol.AgentStats{RSSBytes: 9 << 20, CPUPercent: 0.3, SpoolDepth: int64(i % 3)},
	}
	if i%4 == 0 {
		m.GPUs = append(m.GPUs, protocol.GPU{Index: 0, Name: "Orin (nvgpu)", UtilPercent: float64(i % 100), MemUsed: 1 << 30, MemTotal: 8 << 30, TempC: 50 + rng.Float64()*10})
	}
	return m
}

// start publishes every robot's status and metrics, runs sessions on
// `sessions` of them, fails one on failRobot with a stderr tail, fires
// alerts, then keeps metrics (1 Hz per robot) and session progress (1 Hz per
// session) flowing until stop is closed.
func (f *fleetSim) start(sessions int, failRobot string, stop <-chan struct{}) *sync.WaitGroup {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range f.n {
		id := simRobot(i)
		f.publish(id, "", protocol.RobotStatus{State: "online", AgentVersion: "sim", Hostname: "host-" + id, OS: "linux", Arch: "arm64",
			StartedAt: protocol.Now(), Pipelines: []string{"quantize-int8"}, Models: []string{"m.onnx"}, Epoch: 1}, nil)
		f.publish(id, "", simMetrics(i, rng), nil)
	}
	for i := range sessions {
		id := simRobot(i * (f.n / sessions))
		s := &simSession{id: fmt.Sprintf("s-%04d", i), created: protocol.Now(), started: protocol.Now()}
		f.mu.Lock()
		f.running[id] = s
		f.mu.Unlock()
		f.publish(id, s.id, protocol.SessionStarted{Pipeline: "quantize-int8", Model: "m.onnx"}, nil)
	}
	// One failed session with its stderr tail on failRobot, which also sends a
	// notification every 3 s.
	now := protocol.Now()
	failed := &protocol.ErrorInfo{Code: "runner_error", Message: "runner exited with status 2",
		Detail: "loading model m.onnx\nTraceback (most recent call last):\n  File \"quantize.py\", line 12\nValueError: unsupported op Foo"}
	f.publish(failRobot, "s-fail", protocol.SessionFailed{DurationS: 3.5, Error: *failed, ExitCode: ptr(2)}, nil)
	f.publish(failRobot, "s-fail", protocol.SessionState{Status: "failed", Pipeline: "onnx-quantize", Model: "m.onnx", Percent: 40, Stage: "calibrate",
		CreatedAt: now, StartedAt: &now, FinishedAt: &now, Error: failed}, nil)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for i := range f.n {
				f.publish(simRobot(i), "", simMetrics(i, rng), nil)
			}
			f.mu.Lock()
			var live []string
			for r := range f.running {
				live = append(live, r)
			}
			f.mu.Unlock()
			for _, r := range live {
				f.mu.Lock()
				s := f.running[r]
				if s == nil {
					f.mu.Unlock()
					continue
				}
				s.percent = float64((int(s.percent) + 1) % 100)
				st := protocol.SessionState{Status: "running", Pipeline: "quantize-int8", Model: "m.onnx", Percent: s.percent,
					Stage: "quantize", Message: fmt.Sprintf("layer %d/100", int(s.percent)), CreatedAt: s.created, StartedAt: &s.started,
					EtaS: ptr(100 - s.percent)}
				id := s.id
				f.mu.Unlock()
				f.publish(r, id, st, nil)
			}
			// Alerts fire on every 50th robot (an agent sends each once; the
			// page only sees those fired while it is open, so fire again now
			// and then — the relay and the page take a repeat as the same alert).
			if round%4 == 0 {
				for i := 0; i < f.n; i += 50 {
					f.publish(simRobot(i), "", protocol.RobotAlert{Alert: "cpu_temperature_high", Severity: "warning", State: "firing",
						Message: "cpu-thermal above 85 °C", Value: 88, Threshold: 85}, nil)
				}
			}
			if round%3 == 0 {
				f.publish(failRobot, "", protocol.RobotNotification{Level: "warning", Title: "Disk almost full",
					Message: fmt.Sprintf("/data is %d %% full", 90+round%10)}, nil)
			}
			// A little churn: one robot goes offline (its Will) and back.
			flip := simRobot((round * 37) % f.n)
			f.publish(flip, "", protocol.RobotStatus{State: "offline", Reason: "lost", AgentVersion: "sim", StartedAt: protocol.Now(), Epoch: 1}, nil)
			f.publish(flip, "", protocol.RobotStatus{State: "online", AgentVersion: "sim", Hostname: "host-" + flip, OS: "linux", Arch: "arm64",
				StartedAt: protocol.Now(), Pipelines: []string{"quantize-int8"}, Models: []string{"m.onnx"}, Epoch: 1}, nil)
		}
	}()
	return &wg
}

func ptr[T any](v T) *T { return &v }

// onCommand answers cancel_session like an agent: reply ok, then the
// session's cancelled event and state.
func (f *fleetSim) onCommand(_ mqtt.Client, m mqtt.Message) {
	ev, err := protocol.Decode(m.Payload())
	if err != nil {
		return
	}
	cmd, ok := ev.Data.(protocol.Command)
	if !ok || cmd.Name != "cancel_session" {
		return
	}
	sid, _ := cmd.Args["session_id"].(string)
	robot := ev.Robot
	go func() {
		f.mu.Lock()
		s := f.running[robot]
		if s != nil && s.id == sid {
			delete(f.running, robot)
			f.cancelled[sid] = robot
		}
		f.mu.Unlock()
		f.publish(robot, "", protocol.CommandReply{CommandID: ev.ID, OK: true, Result: map[string]any{"status": "cancelled"}}, nil)
		if s == nil || s.id != sid {
			return
		}
		now := protocol.Now()
		f.publish(robot, sid, protocol.SessionCancelled{DurationS: 5, Reason: "cancelled from the dashboard", By: "dashboard"}, nil)
		f.publish(robot, sid, protocol.SessionState{Status: "cancelled", Pipeline: "quantize-int8", Model: "m.onnx", Percent: s.percent,
			CreatedAt: s.created, StartedAt: &s.started, FinishedAt: &now}, nil)
	}()
}

func (f *fleetSim) wasCancelled(sid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.cancelled[sid]
	return ok
}

// TestDashboardFleet1000 opens the dashboard on 1,000 simulated robots that
// keep publishing (1,000 robot.metrics/s, 100 running sessions): the fleet
// table lists, sorts and filters them all, cancels a session from its row,
// a failed session shows its error and stderr tail, notifications are
// listed, a viewer sees no cancel, and the page's frame times are measured
// (logged, and written to DASHBOARD_BENCH_OUT for docs/BENCHMARKS.md; never
// asserted: a loaded test machine must not fail a test on timing).
func TestDashboardFleet1000(t *testing.T) {
	const (
		secret   = "e2e-secret"
		robots   = 1000
		sessions = 100
	)
	s := startRelay(t, "FLEET_RELAY_AUTH_SECRET="+secret)
	sim := newFleetSim(t, s.mqttAddr, robots)
	stop := make(chan struct{})
	wg := sim.start(sessions, "r-0003", stop)
	t.Cleanup(func() { close(stop); wg.Wait() })

	measure := "3000" // per phase; scripts/bench/dashboard.sh measures 10 s
	if v := os.Getenv("DASHBOARD_MEASURE_MS"); v != "" {
		measure = v
	}
	spec, _ := json.Marshal(map[string]any{
		"robots": robots, "sessions": sessions, "alerting": robots / 50, "cancel_robot": simRobot(10), "cancel_session": "s-0001",
		"failed_robot": "r-0003", "failed_session": "s-fail", "running_robot": simRobot(0), "running_session": "s-0000", "stderr": "ValueError: unsupported op Foo",
		"notification": "Disk almost full", "measure_ms": measure,
	})
	res := runBrowser(t, "fleet.js", "http://"+s.httpAddr+"/", mintToken(t, secret, "operator", "*"),
		mintToken(t, secret, "viewer", "*"), screenshotDir(t), string(spec))
	eventually(t, 20*time.Second, "the cancel_session from the fleet table reaching robot r-0010", func() bool {
		return sim.wasCancelled("s-0001")
	})
	live, _ := res["live"].(map[string]any)
	liveFrame, _ := live["frame"].(map[string]any)
	t.Logf("dashboard at %d robots, live updates only: frame interval p50 %v ms p95 %v ms max %v ms; long tasks %v",
		robots, liveFrame["p50"], liveFrame["p95"], liveFrame["max"], live["longtasks"])
	frame, _ := res["frame"].(map[string]any)
	peer, _ := res["peer_frame"].(map[string]any)
	static, _ := res["peer_static_scroll"].(map[string]any)
	t.Logf("peer: a static page of the same 1,000 rows scrolled the same way: frame interval p50 %v ms p95 %v ms max %v ms",
		static["p50"], static["p95"], static["max"])
	render, _ := res["render"].(map[string]any)
	t.Logf("dashboard at %d robots, scrolling and sorting: frame interval p50 %v ms p95 %v ms max %v ms over %v frames (an empty page in the same run: p50 %v p95 %v); "+
		"the page's render work per frame p50 %v ms p95 %v ms max %v ms; long tasks %v",
		robots, frame["p50"], frame["p95"], frame["max"], frame["n"], peer["p50"], peer["p95"],
		render["p50"], render["p95"], render["max"], res["longtasks"])
	if out := os.Getenv("DASHBOARD_BENCH_OUT"); out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(out, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
