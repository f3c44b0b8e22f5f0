package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"runtime"
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
	t, err := startRelay(relayBin)
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
	calm := rig.step(rate, step)
	logf("storm: calm p50 %.2f p99 %.2f lost %d", calm.p50, calm.p99, calm.expected-calm.delivered)
	var st dashResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(step / 5) // the storm starts inside the measured step
		var err error
		if st, err = connectDashboards(t.wsURL, dashboards, known); err != nil {
			logf("storm: %v", err)
		}
	}()
	stormy := rig.step(rate, step)
	<-done
	for _, c := range st.conns {
		c.Close()
	}
	logf("storm: stormy p50 %.2f p99 %.2f lost %d; %d/%d dashboards with a full snapshot in %s",
		stormy.p50, stormy.p99, stormy.expected-stormy.delivered, st.full, dashboards, st.took)
	fmt.Printf("## storm\n\n`fanout` (%d robots × %d clients) at %.0f events/s, measured for %s without and then with a storm: "+
		"%d dashboards that were connected drop and reconnect at once, each re-subscribing to `fleet` (%d robots known, a snapshot of about %d KiB in parts) "+
		"and to 5 robot rooms.\n\n", robots, subs, rate, step, dashboards, known, st.snapBytes/1024)
	fmt.Printf("| figure | target | without storm | with storm | ratio |\n|---|---|---|---|---|\n")
	fmt.Printf("| fanout p50 (ms) | — | %.2f | %.2f | |\n", calm.p50, stormy.p50)
	fmt.Printf("| fanout p99 (ms) | ≤ 2× | %.2f | %.2f | %.2f× |\n", calm.p99, stormy.p99, stormy.p99/max(calm.p99, 0.001))
	fmt.Printf("| fanout lost | 0 | %d | %d | |\n", calm.expected-calm.delivered, stormy.expected-stormy.delivered)
	fmt.Printf("| dashboards with their whole fleet snapshot | all | | %d of %d | |\n", st.full, dashboards)
	fmt.Printf("| storm: all reconnected and snapshotted in | — | | %s | |\n", st.took.Round(time.Millisecond))
	fmt.Printf("| relay CPU (cores) | — | %.2f | %.2f | |\n\n", calm.sutCPU, stormy.sutCPU)
	fmt.Printf("Command: `go run ./scripts/bench/relaybench -scenario storm -robots %d -subs %d -storm-rate %.0f -step %s -dashboards %d -known %d`\n",
		robots, subs, rate, step, dashboards, known)
	return nil
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
		if !bytes.HasPrefix(msg, []byte(`{"type":"subscribed"`)) && !bytes.HasPrefix(msg, []byte(`{"type":"snapshot"`)) {
			continue
		}
		var f struct {
			Type     string            `json:"type"`
			Room     string            `json:"room"`
			More     bool              `json:"more"`
			Snapshot []json.RawMessage `json:"snapshot"`
		}
		if err := json.Unmarshal(msg, &f); err != nil {
			c.Close()
			return nil, 0, 0, err
		}
		if f.Type == "subscribed" {
			answered++
		}
		if f.Room == "fleet" {
			got += len(f.Snapshot)
			nb += len(msg)
			fleetDone = !f.More
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
		t, err := startRelayWith(relayBin, c.env, c.wrap)
		if err != nil {
			return err
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
	fmt.Printf("## cores\n\n`fanout` (%d robots × %d clients, ×1.5 every %s, held while p99 ≤ %.0f ms and nothing is lost) with the relay limited to one core (GOMAXPROCS=1, `taskset -c 0`) "+
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
