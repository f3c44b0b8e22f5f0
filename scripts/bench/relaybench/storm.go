package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// storm: fanout at a fixed rate (half of its maximum) measured twice, the
// second time while dashboards reconnect and re-subscribe to fleet (with
// `known` robots) and to robot rooms; every reconnecting dashboard must get
// its whole fleet snapshot.
func storm(relayBin string, robots, subs int, rate float64, step time.Duration, dashboards, known int) error {
	penv, capture := profiled()
	if stormRateLimit >= 0 {
		penv = append(penv, fmt.Sprintf("FLEET_RELAY_WS_SNAPSHOT_RATE_PER_CORE=%d", stormRateLimit))
	}
	t, err := startRelayWith(relayBin, penv, nil)
	if err != nil {
		return err
	}
	defer t.stop()
	if err := publishStatuses(t.mqttAddr, known); err != nil {
		return err
	}
	if err := waitKnown(t, known); err != nil {
		return err
	}
	measuredMax := 0.0
	if rate <= 0 {
		// Half load, as BENCH.md says: this relay's own fanout maximum in
		// this run, halved.
		sum, err := runFanout(t, robots, subs, 50, step)
		if err != nil {
			return err
		}
		measuredMax = sum.max.rate
		rate = measuredMax / 2
		time.Sleep(3 * time.Second)
	}
	rig, err := newFanoutRig(t, robots, subs)
	if err != nil {
		return err
	}
	defer rig.close()
	// The dashboards connect once (the state before the storm), then all drop.
	first, err := connectDashboards(t.wsURL, dashboards, known)
	if err != nil {
		return err
	}
	for _, c := range first.conns {
		c.Close()
	}
	rig.step(rate, step/2) // warm-up
	type round struct {
		calm, stormy stepResult
		st           dashResult
	}
	var rounds []round
	for i := range max(stormRepeat, 1) {
		if i > 0 {
			time.Sleep(2 * time.Second) // the last round's dashboards are gone
		}
		prof := capture(step, fmt.Sprintf(".calm%d.pprof", i))
		calm := rig.step(rate, step)
		<-prof
		logf("storm %d: calm p50 %.2f p99 %.2f lost %d", i+1, calm.p50, calm.p99, calm.expected-calm.delivered)
		// The storm's dashboards run in a process of their own, as a
		// thousand browsers would: in this one their garbage and goroutines
		// would stall the measured subscribers' reads, which is the
		// generator measuring itself rather than the relay.
		var st dashResult
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(step / 5) // the storm starts inside the measured step
			var err error
			if st, err = dashboardsProcess(t.wsURL, dashboards, known); err != nil {
				logf("storm: %v", err)
			}
		}()
		prof = capture(step, fmt.Sprintf(".storm%d.pprof", i))
		stormy := rig.step(rate, step)
		<-prof
		<-done
		logf("storm %d: stormy p50 %.2f p99 %.2f lost %d; %d/%d dashboards with a full snapshot in %s",
			i+1, stormy.p50, stormy.p99, stormy.expected-stormy.delivered, st.full, dashboards, st.took)
		rounds = append(rounds, round{calm, stormy, st})
	}
	load := fmt.Sprintf("at %.0f events/s", rate)
	if measuredMax > 0 {
		load = fmt.Sprintf("at half load, %.0f events/s (%.0f deliveries/s; the maximum held in this run, p99 ≤ %.0f ms, was %.0f events/s)",
			rate, rate*float64(subs), p99Limit, measuredMax)
	}
	fmt.Printf("## storm\n\n`fanout` (%d robots × %d clients) %s, measured for %s without and then with a storm, %d times: "+
		"%d dashboards that were connected drop and reconnect at once, each re-subscribing to `fleet` (%d robots known, a snapshot of about %d KiB in parts) "+
		"and to 5 robot rooms. The dashboards run in a child process%s (they stand in for a thousand browsers on other machines: "+
		"their garbage, goroutines and CPU would otherwise stall the relay and the measuring clients on this one); the relay paces snapshot parts at %s and admits new connections at %s.\n\n",
		robots, subs, load, step, len(rounds), dashboards, known, rounds[0].st.snapBytes/1024, niceText(), paceText(), acceptText())
	fmt.Printf("| round | fanout p99 without storm (ms) | with storm (ms) | ratio (target ≤ 2×) | p50 without / with (ms) | lost | dashboards with their whole fleet snapshot | storm done in | relay CPU without / with (cores) |\n|---|---|---|---|---|---|---|---|---|\n")
	ratios := make([]float64, 0, len(rounds))
	for i, r := range rounds {
		ratio := r.stormy.p99 / max(r.calm.p99, 0.001)
		ratios = append(ratios, ratio)
		fmt.Printf("| %d | %.2f | %.2f | %.2f× | %.2f / %.2f | %d | %d of %d | %s | %.2f / %.2f |\n", i+1, r.calm.p99, r.stormy.p99, ratio,
			r.calm.p50, r.stormy.p50, (r.calm.expected-r.calm.delivered)+(r.stormy.expected-r.stormy.delivered),
			r.st.full, dashboards, r.st.took.Round(time.Millisecond), r.calm.sutCPU, r.stormy.sutCPU)
	}
	sort.Float64s(ratios)
	fmt.Printf("\nMedian ratio %.2f× (worst %.2f×) over %d rounds.\n\n", ratios[len(ratios)/2], ratios[len(ratios)-1], len(ratios))
	extra := ""
	if rate > 0 && measuredMax == 0 {
		extra += fmt.Sprintf(" -storm-rate %.0f", rate)
	}
	if stormRateLimit >= 0 {
		extra += fmt.Sprintf(" -snapshot-rate %d", stormRateLimit)
	}
	if !stormNice {
		extra += " -storm-nice=false"
	}
	for _, e := range relayEnv {
		extra += " -relay-env " + e
	}
	fmt.Printf("Command: `go run ./scripts/bench/relaybench -scenario storm -robots %d -subs %d -step %s -dashboards %d -known %d -storm-repeat %d%s`\n",
		robots, subs, step, dashboards, known, len(rounds), extra)
	return nil
}

// niceText says at which priority the dashboards ran.
func niceText() string {
	if stormNice {
		return " at nice 19"
	}
	return " at normal priority"
}

// acceptText says how the relay admitted new connections in this run.
func acceptText() string {
	for _, e := range relayEnv {
		if v, ok := strings.CutPrefix(e, "FLEET_RELAY_WS_ACCEPT_RATE_PER_CORE="); ok {
			if v == "0" {
				return "no rate (`ws.accept_rate_per_core: 0`)"
			}
			return fmt.Sprintf("%s per second per core (`ws.accept_rate_per_core`) × %d cores", v, runtime.NumCPU())
		}
	}
	return fmt.Sprintf("its default, 250 per second per core (`ws.accept_rate_per_core`) × %d cores", runtime.NumCPU())
}

// stormRepeat is how many calm/storm pairs one run measures (-storm-repeat).
var stormRepeat = 3

// paceText says how the relay paced snapshots in this run.
func paceText() string {
	switch {
	case stormRateLimit == 0:
		return "no rate (`ws.snapshot_rate_per_core: 0`)"
	case stormRateLimit > 0:
		return fmt.Sprintf("%d MiB/s per core (`ws.snapshot_rate_per_core`) × %d cores", stormRateLimit>>20, runtime.NumCPU())
	}
	return fmt.Sprintf("its default, 16 MiB/s per core (`ws.snapshot_rate_per_core`) × %d cores", runtime.NumCPU())
}

// stormRateLimit is the relay's ws.snapshot_rate_per_core (-1: its default).
var stormRateLimit int64 = -1

// stormNice runs the storm's dashboards at the lowest CPU priority (-storm-nice).
var stormNice = true

// dashboardsProcess runs connectDashboards in a child relaybench
// (-scenario dashboards) and returns what it measured; the child closes
// its connections when it exits, after reporting.
func dashboardsProcess(url string, n, known int) (dashResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return dashResult{}, err
	}
	args := []string{exe, "-scenario", "dashboards", "-url", url, "-dashboards", strconv.Itoa(n), "-known", strconv.Itoa(known)}
	if stormNice {
		args = append([]string{"nice", "-n", "19"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return dashResult{}, fmt.Errorf("dashboards process: %w", err)
	}
	var r struct {
		Full, SnapBytes int
		Took            time.Duration
		Err             string
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return dashResult{}, fmt.Errorf("dashboards process: %w (%q)", err, out)
	}
	if r.Err != "" {
		err = errors.New(r.Err)
	}
	return dashResult{full: r.Full, took: r.Took, snapBytes: r.SnapBytes}, err
}

// dashboardsMain is the child of dashboardsProcess: it connects, prints
// the result as JSON, waits a moment (connections open, reading), exits.
func dashboardsMain(url string, n, known int) {
	st, err := connectDashboards(url, n, known)
	r := map[string]any{"Full": st.full, "SnapBytes": st.snapBytes, "Took": st.took}
	if err != nil {
		r["Err"] = err.Error()
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	time.Sleep(time.Second)
}

// waitKnown waits until the relay's /api/v1/stats counts n robots.
func waitKnown(t *target, n int) error {
	url := strings.Replace(strings.Replace(t.wsURL, "ws://", "http://", 1), "/ws", "/api/v1/stats", 1)
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get(url)
		if err != nil {
			continue
		}
		var st struct {
			RobotsKnown int `json:"robots_known"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if st.RobotsKnown >= n {
			return nil
		}
	}
	return fmt.Errorf("the relay never knew %d robots", n)
}

// publishStatuses makes the relay know n robots (retained online statuses)
// and waits until it does.
func publishStatuses(addr string, n int) error {
	p, err := dialPublisher(addr)
	if err != nil {
		return err
	}
	defer p.Disconnect(100)
	for i := range n {
		robot := fmt.Sprintf("r-known-%05d", i)
		b := fmt.Appendf(nil, `{"v":1,"type":"robot.status","id":"01JDQ7Z5X4W8K1M9T3B%07d","ts":"2026-11-25T21:30:00.123Z","robot":"%s","seq":1,`+
			`"data":{"state":"online","agent_version":"1.0.0","hostname":"%s","os":"linux","arch":"arm64","started_at":"2026-11-25T20:30:00.123Z",`+
			`"pipelines":["quantize-int8","quantize-fp16"],"models":["yolov8n.onnx","resnet50.onnx"]}}`, i, robot, robot)
		tok := p.Publish("fleet/v1/robots/"+robot+"/status", 1, true, b)
		if i%500 == 499 || i == n-1 {
			tok.Wait()
		}
	}
	return nil
}

type dashResult struct {
	conns     []*websocket.Conn
	full      int
	took      time.Duration
	snapBytes int
}

// connectDashboards connects n dashboards, 64 at a time, each subscribing
// to fleet and 5 robot rooms, and counts those whose fleet snapshot held
// every known robot.
func connectDashboards(url string, n, known int) (dashResult, error) {
	var res dashResult
	var mu sync.Mutex
	var full, bytesSeen atomic.Int64
	var firstErr error
	start := time.Now()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, got, nb, err := dashboard(url, i, known)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			if got == known {
				full.Add(1)
			}
			bytesSeen.Store(int64(nb))
			res.conns = append(res.conns, c)
		}()
	}
	wg.Wait()
	res.took, res.full, res.snapBytes = time.Since(start), int(full.Load()), int(bytesSeen.Load())
	return res, firstErr
}

// dashboard connects one dashboard and reads until its fleet snapshot is
// complete (the last part has more false) and its robot rooms answered.
func dashboard(url string, i, known int) (*websocket.Conn, int, int, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 16 << 10, WriteBufferSize: 1024}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	rooms := []string{"fleet"}
	for j := range 5 {
		rooms = append(rooms, fmt.Sprintf("robot:r-known-%05d", (i*5+j)%known))
	}
	for _, room := range rooms {
		b, _ := json.Marshal(map[string]any{"op": "subscribe", "room": room})
		if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
			c.Close()
			return nil, 0, 0, err
		}
	}
	got, nb, answered, fleetDone := 0, 0, 0, false
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for answered < len(rooms) || !fleetDone {
		_, msg, err := c.ReadMessage()
		if err != nil {
			c.Close()
			return nil, 0, 0, fmt.Errorf("dashboard %d: %w", i, err)
		}
		// A scan, not a JSON decode: a browser parses its own snapshot;
		// here one process would parse a thousand (~700 MB) and starve
		// the machine it shares with the relay. The relay writes the
		// frame's own fields before the snapshot's events, each of which
		// starts with {"v":1,.
		subscribed := bytes.HasPrefix(msg, []byte(`{"type":"subscribed"`))
		if !subscribed && !bytes.HasPrefix(msg, []byte(`{"type":"snapshot"`)) {
			continue
		}
		if subscribed {
			answered++
		}
		head := msg[:min(len(msg), 96)]
		if bytes.Contains(head, []byte(`"room":"fleet"`)) {
			got += bytes.Count(msg, []byte(`{"v":1,`))
			nb += len(msg)
			fleetDone = !bytes.Contains(head, []byte(`"more":true`))
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	// Keep reading (and discarding) live events so this client never
	// becomes a slow consumer.
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return c, got, nb, nil
}

// cores: the fanout maximum with the relay on one core (GOMAXPROCS=1,
// taskset to CPU 0) and on every core.
func cores(relayBin string, robots, subs int, startRate float64, step time.Duration) error {
	n := runtime.NumCPU()
	type run struct {
		label string
		sum   fanoutSummary
	}
	var runs []run
	configs := []struct {
		label string
		env   []string
		wrap  []string
	}{
		{"1 core", []string{"GOMAXPROCS=1"}, tasksetOne()},
		{fmt.Sprintf("%d cores", n), []string{fmt.Sprintf("GOMAXPROCS=%d", n)}, nil},
	}
	for _, c := range configs {
		penv, capture := profiled()
		t, err := startRelayWith(relayBin, append(c.env, penv...), c.wrap)
		if err != nil {
			return err
		}
		if profileOut != "" {
			t.profile = capture
		}
		t.name = "fleet-relay (" + c.label + ")"
		s, err := runFanout(t, robots, subs, startRate, step)
		t.stop()
		if err != nil {
			return err
		}
		runs = append(runs, run{c.label, s})
	}
	one, all := runs[0].sum, runs[1].sum
	fmt.Printf("## cores\n\n`fanout` (%d robots × %d clients, ×1.5 every %s and refined to within ×1.1, held while p99 ≤ %.0f ms and nothing is lost) with the relay limited to one core (GOMAXPROCS=1, `taskset -c 0`) "+
		"and with all %d cores (the load generator shares the machine in both runs).\n\n", robots, subs, step, p99Limit, n)
	fmt.Printf("| figure | target | 1 core | %d cores | ratio |\n|---|---|---|---|---|\n", n)
	fmt.Printf("| max deliveries/s held | ≥ 1.7× | %.0f | %.0f | %.2f× |\n", one.max.deliveries, all.max.deliveries, all.max.deliveries/one.max.deliveries)
	fmt.Printf("| relay CPU at max (cores) | — | %.2f | %.2f | |\n", one.max.sutCPU, all.max.sutCPU)
	fmt.Printf("| load generator CPU at max (cores) | — | %.2f | %.2f | |\n", one.max.genCPU, all.max.genCPU)
	fmt.Printf("| p99 at half load (ms) | — | %.2f | %.2f | |\n\n", one.half.p99, all.half.p99)
	fmt.Printf("Command: `go run ./scripts/bench/relaybench -scenario cores -robots %d -subs %d -step %s -p99-limit %.0f`\n", robots, subs, step, p99Limit)
	return nil
}

func tasksetOne() []string {
	if p, err := exec.LookPath("taskset"); err == nil {
		return []string{p, "-c", "0"}
	}
	return nil
}
