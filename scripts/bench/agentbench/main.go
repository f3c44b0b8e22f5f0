// Command agentbench measures robot-agent for BENCH.md's `agent` scenario
// and prints a markdown section: the binary's size, its RSS and CPU while
// publishing metrics at 1 Hz to a Mosquitto broker on loopback, and the
// rate at which it replays a spool of queued events after an outage.
//
// Replay: the driver fills the agent's spool file with N robot.notification
// events through the agent's own spool package (what the agent would have
// queued while the broker was down), starts the real binary on that state
// directory, and times, at a subscriber, from the agent's online status to
// the last event; it checks that every event arrived, in seq order.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/protocol"
)

func main() {
	bin := flag.String("bin", "bin/robot-agent", "robot-agent binary")
	seconds := flag.Int("seconds", 120, "footprint measurement window")
	events := flag.Int("events", 100000, "events queued for the replay")
	flag.Parse()
	if err := run(*bin, *seconds, *events); err != nil {
		fmt.Fprintln(os.Stderr, "agentbench:", err)
		os.Exit(1)
	}
}

type row struct{ figure, target, measured, command string }

func run(bin string, seconds, events int) error {
	fi, err := os.Stat(bin)
	if err != nil {
		return fmt.Errorf("binary: %w (run make build)", err)
	}
	dir, err := os.MkdirTemp("", "agentbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	broker, err := startMosquitto(dir)
	if err != nil {
		return err
	}
	defer broker.stop()

	rows := []row{{"binary size (CGO off, stripped)", "≤ 12 MiB", fmt.Sprintf("%.2f MiB", float64(fi.Size())/(1<<20)), "`make build` (CGO off, -trimpath, -s -w); `ls -l bin/robot-agent`"}}

	fp, err := footprint(bin, broker.url, filepath.Join(dir, "fp"), time.Duration(seconds)*time.Second)
	if err != nil {
		return fmt.Errorf("footprint: %w", err)
	}
	cmd := fmt.Sprintf("`BENCH_AGENT_SECONDS=%d bash scripts/bench/agent.sh`", seconds)
	rows = append(rows,
		row{fmt.Sprintf("RSS at 1 Hz metrics, %d s (max / mean)", seconds), "≤ 10 MiB", fmt.Sprintf("%.2f / %.2f MiB", fp.rssMax/(1<<20), fp.rssMean/(1<<20)), cmd},
		row{"RSS split (mean): private (RssAnon) / file-backed (RssFile: binary pages, bbolt files)", "context",
			fmt.Sprintf("%.2f / %.2f MiB", fp.anonMean/(1<<20), fp.fileMean/(1<<20)), cmd},
		row{fmt.Sprintf("CPU at 1 Hz metrics, %d s", seconds), "≤ 0.5 % of one core", fmt.Sprintf("%.3f %%", fp.cpuPercent), cmd},
		row{"metrics received by a subscriber", "1 per second", fmt.Sprintf("%d in %d s", fp.metrics, seconds), cmd},
	)

	rp, err := replay(bin, broker.url, filepath.Join(dir, "replay"), events)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	rcmd := fmt.Sprintf("`BENCH_AGENT_EVENTS=%d bash scripts/bench/agent.sh`", events)
	rows = append(rows,
		row{fmt.Sprintf("spool replay of %d events (reconnect → last event at subscriber)", events), "≥ 5,000 events/s, in order, none lost",
			fmt.Sprintf("%.0f events/s (%.2f s), %d received, %d duplicates, in order: %v", float64(events)/rp.elapsed.Seconds(), rp.elapsed.Seconds(), rp.unique, rp.dups, rp.inOrder), rcmd},
		row{fmt.Sprintf("queueing %d events into the spool (64 writers, fsync per group commit)", events), "context", fmt.Sprintf("%.0f events/s", float64(events)/rp.fill.Seconds()), rcmd},
		row{"agent RSS at the end of the replay / 10 s later (spool emptied and compacted)", "context",
			fmt.Sprintf("%.2f / %.2f MiB", rp.rssAfter/(1<<20), rp.rssLater/(1<<20)), rcmd},
	)

	host, _ := os.Hostname()
	fmt.Printf("## agent\n\nrobot-agent on %s (%d CPUs), Mosquitto on loopback, %s. Measured with `/proc/PID/stat` and `/proc/PID/status` once a second.\n\n",
		host, numCPU(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Println("| figure | target | measured | command |")
	fmt.Println("|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s |\n", r.figure, r.target, r.measured, r.command)
	}
	fmt.Println()
	return nil
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// --- broker -----------------------------------------------------------------

type mosquitto struct {
	cmd *exec.Cmd
	url string
}

func startMosquitto(dir string) (*mosquitto, error) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/mosquitto"); err2 != nil {
			return nil, fmt.Errorf("mosquitto not found (apt-get install mosquitto): %w", err)
		}
		path = "/usr/sbin/mosquitto"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\nlistener %d 127.0.0.1\n", port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("mosquitto did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &mosquitto{cmd: cmd, url: "tcp://" + addr}, nil
}

func (m *mosquitto) stop() { _ = m.cmd.Process.Kill(); _ = m.cmd.Wait() }

// --- agent process ----------------------------------------------------------

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startAgent(bin, broker, robot, state string) (*agentProc, error) {
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"ROBOT_AGENT_ROBOT_ID=" + robot,
		"ROBOT_AGENT_MQTT_BROKER=" + broker,
		"ROBOT_AGENT_STATE_DIR=" + state,
		"ROBOT_AGENT_METRICS_INTERVAL=1s",
		"ROBOT_AGENT_LOG_LEVEL=warn",
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agentProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(a.done) }()
	return a, nil
}

func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// cpuSeconds reads utime+stime of pid from /proc/pid/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are 14 and 15.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// rssBytes reads VmRSS of pid from /proc/pid/status.
func rssBytes(pid int) (float64, error) { return statusField(pid, "VmRSS:") }

// statusField reads one kB field of /proc/pid/status in bytes: VmRSS (all
// resident pages), RssAnon (private memory: heap, stacks) or RssFile (pages
// of mapped files: the binary itself and the bbolt files).
func statusField(pid int, field string) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// --- subscriber -------------------------------------------------------------

type sub struct {
	c        mqtt.Client
	online   chan struct{}
	onceOn   sync.Once
	metrics  atomic.Int64
	mu       sync.Mutex
	seen     map[string]bool
	lastSeq  int64
	inOrder  bool
	dups     int
	unique   int
	lastAt   time.Time
	uniqueCh chan int
}

func subscribe(url, robot string) (*sub, error) {
	s := &sub{online: make(chan struct{}), seen: map[string]bool{}, inOrder: true, uniqueCh: make(chan int, 1)}
	topics := protocol.Topics{}
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID("bench-sub-" + robot).SetCleanSession(true).SetOrderMatters(true)
	s.c = mqtt.NewClient(o)
	if t := s.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscriber connect: %v", t.Error())
	}
	t := s.c.SubscribeMultiple(map[string]byte{topics.RobotTree(robot): 1}, func(_ mqtt.Client, m mqtt.Message) {
		switch {
		case strings.HasSuffix(m.Topic(), "/status"):
			if strings.Contains(string(m.Payload()), `"state":"online"`) {
				s.onceOn.Do(func() { close(s.online) })
			}
		case strings.HasSuffix(m.Topic(), "/metrics"):
			s.metrics.Add(1)
		case strings.HasSuffix(m.Topic(), "/notifications"):
			ev, err := protocol.Decode(m.Payload())
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.seen[ev.ID] {
				s.dups++
			} else {
				s.seen[ev.ID] = true
				s.unique++
				if ev.Seq <= s.lastSeq {
					s.inOrder = false
				}
				s.lastSeq = ev.Seq
				s.lastAt = time.Now()
				n := s.unique
				select {
				case s.uniqueCh <- n:
				default:
				}
			}
			s.mu.Unlock()
		}
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("subscribe: %v", t.Error())
	}
	return s, nil
}

// --- scenarios --------------------------------------------------------------

type fpResult struct {
	rssMax, rssMean, anonMean, fileMean, cpuPercent float64
	metrics                                         int64
}

func footprint(bin, broker, state string, window time.Duration) (fpResult, error) {
	var r fpResult
	s, err := subscribe(broker, "bench-fp")
	if err != nil {
		return r, err
	}
	defer s.c.Disconnect(0)
	a, err := startAgent(bin, broker, "bench-fp", state)
	if err != nil {
		return r, err
	}
	defer a.stop()
	select {
	case <-s.online:
	case <-time.After(30 * time.Second):
		return r, errors.New("agent did not come online")
	}
	time.Sleep(3 * time.Second) // warm-up: first samples, GC settles
	pid := a.cmd.Process.Pid
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	m0 := s.metrics.Load()
	start := time.Now()
	var sum, anon, file float64
	n := 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < window {
		<-tick.C
		rss, err := rssBytes(pid)
		if err != nil {
			return r, err
		}
		a, _ := statusField(pid, "RssAnon:")
		f, _ := statusField(pid, "RssFile:")
		sum, anon, file = sum+rss, anon+a, file+f
		n++
		r.rssMax = max(r.rssMax, rss)
	}
	cpu1, err := cpuSeconds(pid)
	if err != nil {
		return r, err
	}
	r.cpuPercent = (cpu1 - cpu0) / time.Since(start).Seconds() * 100
	r.rssMean, r.anonMean, r.fileMean = sum/float64(n), anon/float64(n), file/float64(n)
	r.metrics = s.metrics.Load() - m0
	return r, nil
}

type replayResult struct {
	fill, elapsed time.Duration
	unique, dups  int
	inOrder       bool
	rssAfter      float64
	rssLater      float64
}

func replay(bin, broker, state string, n int) (replayResult, error) {
	var r replayResult
	const robot = "bench-replay"
	if err := os.MkdirAll(state, 0o750); err != nil {
		return r, err
	}
	// Queue n events as the agent does during an outage.
	out, err := spool.Open(spool.Options{Path: filepath.Join(state, "spool.db"), MaxBytes: 1 << 30})
	if err != nil {
		return r, err
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				ev := protocol.NewEvent(robot, protocol.RobotNotification{Level: "info", Title: "queued during outage",
					Message: fmt.Sprintf("event %d of %d, padded to a typical size: %s", i, n, strings.Repeat("x", 64))})
				if err := out.Emit(ev); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	r.fill = time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return r, err
	}
	if d := out.Stats().Depth; d != int64(n) {
		return r, fmt.Errorf("spool holds %d events, want %d", d, n)
	}
	if err := out.Close(); err != nil {
		return r, err
	}

	s, err := subscribe(broker, robot)
	if err != nil {
		return r, err
	}
	defer s.c.Disconnect(0)
	a, err := startAgent(bin, broker, robot, state)
	if err != nil {
		return r, err
	}
	defer a.stop()
	select {
	case <-s.online:
	case <-time.After(30 * time.Second):
		return r, errors.New("agent did not come online")
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for done := false; !done; {
		select {
		case u := <-s.uniqueCh:
			done = u >= n
		case <-ctx.Done():
			s.mu.Lock()
			defer s.mu.Unlock()
			return r, fmt.Errorf("only %d of %d events arrived", s.unique, n)
		}
	}
	s.mu.Lock()
	r.elapsed = s.lastAt.Sub(t0)
	r.unique, r.dups, r.inOrder = s.unique, s.dups, s.inOrder
	s.mu.Unlock()
	r.rssAfter, _ = rssBytes(a.cmd.Process.Pid)
	time.Sleep(10 * time.Second)
	r.rssLater, _ = rssBytes(a.cmd.Process.Pid)
	return r, nil
}
