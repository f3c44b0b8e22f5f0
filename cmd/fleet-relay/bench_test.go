package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/internal/brokertest"
)

// rssKiB reads VmRSS of a process.
func rssKiB(b *testing.B, pid int) int {
	b.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkIdle measures the relay process's RSS per idle WebSocket
// connection, each subscribed to room fleet. The relay runs as its own
// process (the built binary), so the clients' memory is not counted.
//
//	go test -run x -bench Idle -benchtime 1x ./cmd/fleet-relay/
func BenchmarkIdle(b *testing.B) {
	const conns = 5000
	bin := filepath.Join(b.TempDir(), "fleet-relay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	for range b.N {
		port, mport := brokertest.FreePort(b), brokertest.FreePort(b)
		cmd := exec.Command(bin, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "FLEET_RELAY_LISTEN=127.0.0.1:"+strconv.Itoa(port),
			"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=127.0.0.1:"+strconv.Itoa(mport), "FLEET_RELAY_AUTH_SECRET=", "GOGC="+os.Getenv("BENCH_GOGC"))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		brokertest.WaitPort(b, "127.0.0.1:"+strconv.Itoa(port), 10*time.Second)
		time.Sleep(500 * time.Millisecond) // let the runtime settle before the baseline
		before := rssKiB(b, cmd.Process.Pid)
		d := websocket.Dialer{ReadBufferSize: 256, WriteBufferSize: 256}
		var cs []*websocket.Conn
		for i := 0; i < conns; i++ {
			c, _, err := d.Dial("ws://127.0.0.1:"+strconv.Itoa(port)+"/ws", nil)
			if err != nil {
				b.Fatalf("conn %d: %v", i, err)
			}
			if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"subscribe","room":"fleet"}`)); err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
		}
		// Read each connected + subscribed frame so the relay's queues are empty.
		for _, c := range cs {
			for j := 0; j < 2; j++ {
				if _, _, err := c.ReadMessage(); err != nil {
					b.Fatal(err)
				}
			}
		}
		time.Sleep(3 * time.Second) // idle: the writers' linger (1s) is over
		after := rssKiB(b, cmd.Process.Pid)
		b.ReportMetric(float64(after-before)*1024/conns, "rss-bytes/conn")
		b.ReportMetric(float64(after)/1024, "rss-MiB")
		for _, c := range cs {
			c.Close()
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
}
