// Command reconnect measures BENCH.md's `reconnect` scenario for the agent
// side: N simulated robot agents (the real agent/uplink connection manager,
// one per robot, in this process, with an empty outbox) connected to a
// Mosquitto broker; the broker is stopped (kill -9: a crash, no goodbye),
// kept down for a while and started again. It reports how long after the
// restart 50 %, 95 % and 100 % of the agents are connected again, and the
// connect rate the broker sees (successful connects per second, from the
// broker's own log, and connection attempts per second, refused ones
// included, from the clients). It runs the agent's reconnect schedule and,
// as the peer in the same run, the previous one (1 s doubling to 60 s).
// It prints a markdown section on stdout.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/agent/uplink"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

func main() {
	agents := flag.Int("agents", 1000, "simulated agents")
	warm := flag.Duration("warmup", 5*time.Second, "time connected before the broker goes down")
	down := flag.Duration("down", 30*time.Second, "time the broker stays down")
	limit := flag.Duration("limit", 150*time.Second, "give up waiting for reconnects after this")
	relay := flag.String("relay", "", "fleet-relay binary: also time the relay's /readyz after the restart (empty: agents only)")
	flag.Parse()
	relayBin = *relay
	if err := run(*agents, *warm, *down, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "reconnect:", err)
		os.Exit(1)
	}
}

// relayBin is the fleet-relay binary to run against the broker, or "".
var relayBin string

// schedule is one reconnect policy under test.
type schedule struct {
	name                  string
	min, fastMax, fastFor time.Duration
	max                   time.Duration
	description           string
}

type result struct {
	s                      schedule
	connected              int
	t50, t95, t100         time.Duration // after the restart; -1 when not reached
	brokerPeak, brokerMean float64       // successful connects/s at the broker, after the restart
	attemptsPeakDown       float64       // client connection attempts/s while the broker was down (peak 1 s)
	attemptsDown           int64         // attempts while down, in total
	relayReady             time.Duration // relay /readyz 200 again after the restart; -1 when not
}

func run(n int, warm, down, limit time.Duration) error {
	schedules := []schedule{
		{name: "agent (mqttkit.Backoff defaults)", min: mqttkit.DefaultBackoffMin, fastMax: mqttkit.DefaultBackoffFastMax,
			fastFor: mqttkit.DefaultBackoffFastFor, max: mqttkit.DefaultBackoffMax,
			description: "0.5 s doubling, capped at 8 s for the first 2 min of an outage, then at 60 s; each delay drawn from [d/2, d]"},
		{name: "previous (1 s doubling to 60 s)", min: time.Second, fastMax: time.Minute, fastFor: -1, max: time.Minute,
			description: "the previous cap: 1 s doubling to 60 s, with the same [d/2, d] jitter (it had ±20 %)"},
	}
	var results []result
	for _, s := range schedules {
		fmt.Fprintf(os.Stderr, "reconnect: %s, %d agents, broker down %s\n", s.name, n, down)
		r, err := runOne(s, n, warm, down, limit)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		results = append(results, r)
	}
	host, _ := os.Hostname()
	fmt.Printf("## reconnect\n\n")
	fmt.Printf("%d simulated agents (the agent's own `agent/uplink` connection manager, one paho client each, in one process) on %s (%d CPUs), Mosquitto on loopback, %s UTC. "+
		"After %s connected, the broker is killed (SIGKILL), kept down %s and started again; times are from the restart (the broker accepting connections) until that share of the agents published their online status again. "+
		"Broker connects/s counts `New client connected` lines in Mosquitto's log per second; attempts/s while down are the clients' refused connection attempts.\n\n",
		n, host, numCPU(), time.Now().UTC().Format("2006-01-02 15:04"), warm, down)
	fmt.Printf("| figure | target | %s | %s |\n|---|---|---|---|\n", results[0].s.name, results[1].s.name)
	row := func(name, target string, f func(r result) string) {
		fmt.Printf("| %s | %s | %s | %s |\n", name, target, f(results[0]), f(results[1]))
	}
	row("back after the restart: 50 %", "—", func(r result) string { return dur(r.t50) })
	row("back after the restart: 95 %", "≤ 10 s", func(r result) string { return dur(r.t95) })
	row("back after the restart: 100 %", "—", func(r result) string { return dur(r.t100) })
	row("connected at the end", fmt.Sprint(n), func(r result) string { return fmt.Sprint(r.connected) })
	if relayBin != "" {
		row("fleet-relay `/readyz` 200 again after the restart (its own schedule)", "≤ 10 s", func(r result) string { return dur(r.relayReady) })
	}
	row("connects/s at the broker after the restart: peak (1 s) / mean until 100 %", "no storm", func(r result) string {
		return fmt.Sprintf("%.0f / %.0f", r.brokerPeak, r.brokerMean)
	})
	row("connection attempts/s while down: peak (1 s) / total", "—", func(r result) string {
		return fmt.Sprintf("%.0f / %d", r.attemptsPeakDown, r.attemptsDown)
	})
	fmt.Printf("\nSchedules: agent — %s; previous — %s. Command: `bash scripts/bench/reconnect.sh` (BENCH_RECONNECT_AGENTS=%d BENCH_RECONNECT_DOWN=%s).\n",
		results[0].s.description, results[1].s.description, n, down)
	return nil
}

func dur(d time.Duration) string {
	if d < 0 {
		return "not reached"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + 1
}

func runOne(s schedule, n int, warm, down, limit time.Duration) (result, error) {
	res := result{s: s, t50: -1, t95: -1, t100: -1, relayReady: -1}
	b, err := startBroker()
	if err != nil {
		return res, err
	}
	defer b.kill()
	url := "tcp://" + b.addr
	var rl *relay
	if relayBin != "" {
		if rl, err = startRelay(relayBin, url); err != nil {
			return res, err
		}
		defer rl.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ups := make([]*uplink.Uplink, n)
	var wg sync.WaitGroup
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range n {
		id := fmt.Sprintf("bench-%04d", i)
		status := func(state string) func(int64) []byte {
			return func(e int64) []byte {
				return []byte(fmt.Sprintf(`{"v":1,"type":"robot.status","robot":%q,"data":{"state":%q,"epoch":%d}}`, id, state, e))
			}
		}
		var epoch int64
		up, err := uplink.New(uplink.Options{
			Brokers: []string{url}, ClientID: id, StatusTopic: protocol.Topics{}.Status(id),
			KeepAlive: 30 * time.Second, ConnectTimeout: 10 * time.Second,
			BackoffMin: s.min, BackoffFastMax: s.fastMax, BackoffFastFor: s.fastFor, BackoffMax: s.max,
			NextEpoch: func() int64 { epoch++; return epoch },
			Will:      status("offline"), Online: status("online"), Offline: status("offline"),
			Logger: log,
		}, emptySource{})
		if err != nil {
			cancel()
			return res, err
		}
		ups[i] = up
		wg.Go(func() { _ = up.Run(ctx) })
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // a fleet does not boot in one millisecond
		}
	}
	defer func() { cancel(); wg.Wait() }()
	connected := func() int {
		c := 0
		for _, u := range ups {
			if u.Connected() {
				c++
			}
		}
		return c
	}
	attempts := func() int64 {
		var a int64
		for _, u := range ups {
			a += u.Stats().Attempts
		}
		return a
	}
	deadline := time.Now().Add(60 * time.Second)
	for connected() < n {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d agents connected at the start", connected(), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(warm)
	if rl != nil && !rl.waitReady(30*time.Second) {
		return res, errors.New("fleet-relay not ready before the broker restart")
	}

	b.kill()
	downAt := time.Now()
	a0 := attempts()
	var perSec []int64
	last := a0
	for time.Since(downAt) < down {
		time.Sleep(time.Second)
		a := attempts()
		perSec = append(perSec, a-last)
		last = a
	}
	res.attemptsDown = attempts() - a0
	res.attemptsPeakDown = float64(slices.Max(append(perSec, 0)))

	if err := b.start(); err != nil {
		return res, err
	}
	restart := b.listening
	if rl != nil {
		go func() {
			if rl.waitReady(limit) {
				rl.readyAfter.Store(int64(time.Since(restart)))
			}
		}()
	}
	for time.Since(restart) < limit {
		c := connected()
		el := time.Since(restart)
		if res.t50 < 0 && c*100 >= n*50 {
			res.t50 = el
		}
		if res.t95 < 0 && c*100 >= n*95 {
			res.t95 = el
		}
		if c == n {
			res.t100 = el
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.connected = connected()
	if rl != nil {
		deadline := time.Now().Add(limit - time.Since(restart))
		for rl.readyAfter.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if d := rl.readyAfter.Load(); d > 0 {
			res.relayReady = time.Duration(d)
		}
	}
	res.brokerPeak, res.brokerMean = b.connectRate(restart, res.t100)
	return res, nil
}

// relay is a fleet-relay child process on the broker.
type relay struct {
	cmd        *exec.Cmd
	addr       string
	readyAfter atomic.Int64 // ns after the restart; 0 until ready
}

func startRelay(bin, broker string) (*relay, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	r := &relay{addr: addr, cmd: exec.Command(bin)}
	r.cmd.Env = append(os.Environ(), "FLEET_RELAY_LISTEN="+addr, "FLEET_RELAY_MQTT_BROKER="+broker)
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start fleet-relay: %w", err)
	}
	return r, nil
}

// waitReady polls /readyz until 200 or the timeout.
func (r *relay) waitReady(timeout time.Duration) bool {
	c := &http.Client{Timeout: time.Second}
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get("http://" + r.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
	}
	return false
}

func (r *relay) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// emptySource is an outbox with nothing to send.
type emptySource struct{}

func (emptySource) Read(int64, int) ([]spool.Entry, error) { return nil, nil }
func (emptySource) Ack(...int64) error                     { return nil }
func (emptySource) Notify() <-chan struct{}                { return nil }

// broker is a Mosquitto child process on a fixed loopback port.
type broker struct {
	dir, addr, logFile string
	cmd                *exec.Cmd
	listening          time.Time // when the last start accepted connections
}

func startBroker() (*broker, error) {
	if _, err := os.Stat(mosquittoPath()); err != nil {
		return nil, errors.New("mosquitto missing (make test-deps)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "bench-reconnect-")
	if err != nil {
		return nil, err
	}
	b := &broker{dir: dir, addr: "127.0.0.1:" + strconv.Itoa(port), logFile: filepath.Join(dir, "mosquitto.log")}
	conf := fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n"+
		"log_dest file %s\nlog_type notice\nlog_timestamp true\nlog_timestamp_format %%s\n", port, b.logFile)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return b, b.start()
}

func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	return "/usr/sbin/mosquitto"
}

func (b *broker) start() error {
	b.cmd = exec.Command(mosquittoPath(), "-c", filepath.Join(b.dir, "mosquitto.conf"))
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start mosquitto: %w", err)
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", b.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			b.listening = time.Now()
			return nil
		}
		if i > 500 {
			return fmt.Errorf("mosquitto does not listen on %s", b.addr)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (b *broker) kill() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	b.cmd = nil
}

// connectRate reads Mosquitto's log: successful connects per second from
// the restart on, peak and mean over the first span (the whole log tail
// when span is negative).
func (b *broker) connectRate(since time.Time, span time.Duration) (peak, mean float64) {
	f, err := os.Open(b.logFile)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	perSec := map[int64]int{}
	total := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "New client connected") {
			continue
		}
		ts, _, ok := strings.Cut(line, ":")
		sec, err := strconv.ParseInt(ts, 10, 64)
		if !ok || err != nil || sec < since.Unix() {
			continue
		}
		perSec[sec]++
		total++
	}
	for _, c := range perSec {
		peak = max(peak, float64(c))
	}
	if span <= 0 {
		span = time.Duration(len(perSec)) * time.Second
	}
	if s := max(span.Seconds(), 1); total > 0 {
		mean = float64(total) / s
	}
	return peak, mean
}
