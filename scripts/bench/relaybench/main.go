// The relaybench program is the load generator of the relay benchmarks
// (shared/BENCH.md): fanout, fleet and idle. It starts the system under test
// itself — bin/fleet-relay on its embedded broker, and Mosquitto with a
// websockets listener as the peer measured in the same run — drives robots
// over MQTT and dashboard clients over WebSocket, and prints a markdown
// section. Latency is end to end: publishers stamp data.sent_ns, receivers
// subtract it from their clock (same machine).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/protocol"
)

func main() {
	scenario := flag.String("scenario", "fanout", "fanout | fleet | idle | storm | cores")
	relayBin := flag.String("relay", "bin/fleet-relay", "fleet-relay binary")
	robots := flag.Int("robots", 10, "fanout: publishing robots (one session each)")
	subs := flag.Int("subs", 50, "fanout: WebSocket clients per session room")
	step := flag.Duration("step", 5*time.Second, "fanout: duration of one rate step")
	startRate := flag.Float64("start-rate", 50, "fanout: first publish rate, events/s over all robots")
	duration := flag.Duration("duration", 60*time.Second, "fleet: run time")
	conns := flag.Int("conns", 20000, "idle: connections")
	stormRate := flag.Float64("storm-rate", 0, "storm: the fanout publish rate (events/s); 0: half of this relay's fanout maximum, measured first in the same run")
	flag.IntVar(&stormRepeat, "storm-repeat", 3, "storm: calm/storm pairs to measure")
	dashboards := flag.Int("dashboards", 1000, "storm: reconnecting dashboards")
	known := flag.Int("known", 2000, "storm: robots the relay knows")
	url := flag.String("url", "", "dashboards: the relay's /ws URL (the storm's child process)")
	flag.Int64Var(&stormRateLimit, "snapshot-rate", -1, "storm: the relay's ws.snapshot_rate_per_core, bytes/s (-1: its default, 0: no pacing)")
	flag.BoolVar(&stormNice, "storm-nice", true, "storm: run the reconnecting dashboards at nice 19: they stand in for browsers on other machines, and their own CPU would otherwise starve the relay and the measured clients on this one (-storm-nice=false to see it)")
	flag.Func("relay-env", "KEY=VALUE for the relay process only (repeatable; e.g. GOGC=200)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", v)
		}
		relayEnv = append(relayEnv, v)
		return nil
	})
	flag.StringVar(&profileOut, "profile", "", "storm, cores: write the relay's CPU profile of the measured step(s) to this file prefix")
	flag.Float64Var(&p99Limit, "p99-limit", 50, "fanout, cores: the p99 (ms) a rate step may reach and still count as held")
	flag.Parse()
	raiseNoFile()
	var err error
	switch *scenario {
	case "fanout":
		err = fanout(*relayBin, *robots, *subs, *startRate, *step)
	case "fleet":
		err = fleet(*relayBin, *duration)
	case "idle":
		err = idle(*relayBin, *conns)
	case "storm":
		err = storm(*relayBin, *robots, *subs, *stormRate, *step, *dashboards, *known)
	case "dashboards":
		dashboardsMain(*url, *dashboards, *known)
	case "cores":
		err = cores(*relayBin, *robots, *subs, *startRate, *step)
	default:
		err = fmt.Errorf("unknown scenario %q", *scenario)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

// relayEnv is the -relay-env environment, set on every relay started.
var relayEnv []string

// profileOut is the -profile file prefix ("" = no profiles).
var profileOut string

// profiled returns the env that makes a relay serve Go's profiles on a
// port of its own, and a function that fetches a CPU profile of d from it
// into profileOut+suffix (in the background; wait for the returned channel).
func profiled() (env []string, capture func(d time.Duration, suffix string) <-chan struct{}) {
	if profileOut == "" {
		done := make(chan struct{})
		close(done)
		return nil, func(time.Duration, string) <-chan struct{} { return done }
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort())
	env = []string{"FLEET_RELAY_PROMETHEUS_LISTEN=" + addr, "FLEET_RELAY_PPROF=true"}
	return env, func(d time.Duration, suffix string) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(1, int(d.Seconds()))))
			if err != nil {
				logf("profile: %v", err)
				return
			}
			defer resp.Body.Close()
			f, err := os.Create(profileOut + suffix)
			if err != nil {
				logf("profile: %v", err)
				return
			}
			defer f.Close()
			_, _ = io.Copy(f, resp.Body)
			logf("profile: wrote %s", f.Name())
		}()
		return done
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func raiseNoFile() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// target is a running system under test.
type target struct {
	name     string
	cmd      *exec.Cmd
	mqttAddr string // where robots publish
	relay    bool   // WebSocket JSON API (else MQTT over WebSocket)
	wsURL    string
	// profile, when set, captures a CPU profile of d (see profiled).
	profile func(d time.Duration, suffix string) <-chan struct{}
}

func (t *target) stop() {
	if t.cmd != nil && t.cmd.Process != nil {
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = t.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = t.cmd.Process.Kill()
		}
	}
}

func (t *target) pid() int { return t.cmd.Process.Pid }

func startRelay(bin string) (*target, error) { return startRelayWith(bin, nil, nil) }

// startRelayWith starts the relay with extra environment, under a wrapper
// command (e.g. taskset) when wrap is set.
func startRelayWith(bin string, env, wrap []string) (*target, error) {
	hp, mp := freePort(), freePort()
	cmd := exec.Command(bin)
	if len(wrap) > 0 {
		cmd = exec.Command(wrap[0], append(wrap[1:], bin)...)
	}
	cmd.Env = append(append(append(os.Environ(), relayEnv...), env...),
		"FLEET_RELAY_LISTEN=127.0.0.1:"+strconv.Itoa(hp),
		"FLEET_RELAY_MQTT_BROKER=",
		"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=127.0.0.1:"+strconv.Itoa(mp),
		"FLEET_RELAY_AUTH_SECRET=")
	logFile, _ := os.CreateTemp("", "relaybench-relay-*.log")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start relay: %w", err)
	}
	t := &target{name: "fleet-relay", cmd: cmd, mqttAddr: "127.0.0.1:" + strconv.Itoa(mp), relay: true,
		wsURL: "ws://127.0.0.1:" + strconv.Itoa(hp) + "/ws"}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(hp) + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return t, nil
			}
		}
		if time.Now().After(deadline) {
			t.stop()
			return nil, fmt.Errorf("relay not ready after 20s (log %s)", logFile.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startMosquitto() (*target, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	mp, wp := freePort(), freePort()
	dir, _ := os.MkdirTemp("", "relaybench-mosq")
	conf := fmt.Sprintf("per_listener_settings false\nallow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 0\nlistener %d 127.0.0.1\nlistener %d 127.0.0.1\nprotocol websockets\n", mp, wp)
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	t := &target{name: "mosquitto (websockets)", cmd: cmd, mqttAddr: "127.0.0.1:" + strconv.Itoa(mp),
		wsURL: "ws://127.0.0.1:" + strconv.Itoa(wp) + "/mqtt"}
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(wp)); err == nil {
			c.Close()
			return t, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.stop()
	return nil, fmt.Errorf("mosquitto did not listen")
}

// recorder collects end-to-end latencies and counts deliveries.
type recorder struct {
	delivered atomic.Int64
	mu        sync.Mutex
	samples   []int64 // ns; capped, then sampled 1 in skip
	seen      int64
}

const maxSamples = 2_000_000

func (r *recorder) add(lat int64) {
	r.delivered.Add(1)
	r.mu.Lock()
	r.seen++
	if len(r.samples) < maxSamples {
		r.samples = append(r.samples, lat)
	} else if r.seen%16 == 0 {
		r.samples[r.seen%maxSamples] = lat
	}
	r.mu.Unlock()
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.samples = r.samples[:0]
	r.seen = 0
	r.mu.Unlock()
	r.delivered.Store(0)
}

// quantiles returns p50 and p99 in milliseconds.
func (r *recorder) quantiles() (p50, p99 float64) {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	q := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))]) / 1e6 }
	return q(0.50), q(0.99)
}

var sentKey = []byte(`"sent_ns":`)

// record finds every stamped event in a frame (a frame may batch several).
func (r *recorder) record(msg []byte) {
	now := time.Now().UnixNano()
	for {
		i := bytes.Index(msg, sentKey)
		if i < 0 {
			return
		}
		msg = msg[i+len(sentKey):]
		j := 0
		for j < len(msg) && msg[j] >= '0' && msg[j] <= '9' {
			j++
		}
		if v, err := strconv.ParseInt(string(msg[:j]), 10, 64); err == nil {
			r.add(now - v)
		}
		msg = msg[j:]
	}
}

// dialRelay opens a WebSocket client subscribed to rooms.
func dialRelay(url string, rooms []string, rec *recorder) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 1024}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	for _, room := range rooms {
		b, _ := json.Marshal(map[string]any{"op": "subscribe", "room": room})
		if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
			c.Close()
			return nil, err
		}
	}
	// Wait for every subscribed answer before measuring.
	got := 0
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for got < len(rooms) {
		_, msg, err := c.ReadMessage()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		if bytes.Contains(msg, []byte(`"subscribed"`)) {
			got++
		} else if bytes.Contains(msg, []byte(`"error"`)) {
			c.Close()
			return nil, fmt.Errorf("subscribe: %s", msg)
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	if rec != nil {
		go func() {
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				rec.record(msg)
			}
		}()
	}
	return c, nil
}

// dialMQTTWS opens an MQTT-over-WebSocket subscriber to filters.
func dialMQTTWS(url string, filters []string, rec *recorder) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(url).SetClientID("bench-" + protocol.NewID()).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).SetKeepAlive(60 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("mqtt ws connect: %v", tok.Error())
	}
	m := map[string]byte{}
	for _, f := range filters {
		m[f] = 0
	}
	tok := c.SubscribeMultiple(m, func(_ paho.Client, msg paho.Message) { rec.record(msg.Payload()) })
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("mqtt ws subscribe: %v", tok.Error())
	}
	return c, nil
}

func dialPublisher(addr string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("pub-" + protocol.NewID()).
		SetCleanSession(true).SetAutoReconnect(false).SetMaxResumePubInFlight(1000).SetWriteTimeout(10 * time.Second)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("publisher connect: %v", tok.Error())
	}
	return c, nil
}

// progressPayload is a ~300 B session.progress stamped with the send time.
func progressPayload(robot, session string, seq int64) []byte {
	now := time.Now()
	return fmt.Appendf(nil, `{"v":1,"type":"session.progress","id":"%s","ts":"%s","robot":"%s","session":"%s","seq":%d,"data":{"percent":42.5,"stage":"quantize","message":"layer 12/28 of the encoder stack","elapsed_s":31.2,"eta_s":42.1,"sent_ns":%d}}`,
		protocol.NewID(), now.UTC().Format(protocol.TimeLayout), robot, session, seq, now.UnixNano())
}

func metricsPayload(robot string, seq int64) []byte {
	ev := protocol.NewEvent(robot, protocol.RobotMetrics{
		CPU:    protocol.CPU{Percent: 23.5, PerCore: []float64{20.1, 26.9, 22, 25}, Load1: 0.4, Load5: 0.3, Load15: 0.2},
		Memory: protocol.Memory{Total: 8 << 30, Used: 3 << 30, Available: 5 << 30, Percent: 37.5},
		Swap:   protocol.Swap{}, Disks: []protocol.Disk{{Mount: "/", Total: 64 << 30, Used: 20 << 30, Percent: 31.25}},
		Net: protocol.Net{RxBps: 1000, TxBps: 500}, Temperatures: []protocol.Temperature{{Sensor: "cpu", Celsius: 50}},
		GPUs: []protocol.GPU{}, UptimeS: 100, Agent: protocol.AgentStats{RSSBytes: 8 << 20, CPUPercent: 0.2},
	})
	ev.Seq = seq
	b, _ := json.Marshal(ev)
	// Stamp the send time as an extra field of data (receivers ignore unknown fields).
	return bytes.Replace(b, []byte(`"data":{`), fmt.Appendf(nil, `"data":{"sent_ns":%d,`, time.Now().UnixNano()), 1)
}

// cpuSeconds returns the user+system CPU time of a process.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

func rssBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

var _ = io.Discard
var _ = context.Background
