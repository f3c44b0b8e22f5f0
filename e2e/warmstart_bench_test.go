package e2e

// BENCH.md scenario "warmstart": a relay replaying 100,000 events from
// JetStream before it reports ready; time to ready and RSS after, against the
// same relay starting without history in the same run. Run by
// scripts/bench/warmstart.sh (go test -run '^$' -bench WarmStart ./e2e/).

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/cloud/history"
	"github.com/robotfleet/fleetlink/internal/natstest"
	"github.com/robotfleet/fleetlink/protocol"
)

func BenchmarkWarmStart(b *testing.B) {
	events := 100000
	if v, err := strconv.Atoi(os.Getenv("WARMSTART_EVENTS")); err == nil && v > 0 {
		events = v
	}
	c := natstest.StartCluster(b, 1)
	node := c.Nodes[0]
	ctx := context.Background()
	// The relay's account creates the stream; the robot's publishes into it.
	st, err := history.Open(ctx, history.Options{URLs: []string{node.NATSURL()}, Username: natstest.RelayUser,
		Password: natstest.RelayPassword})
	if err != nil {
		b.Fatal(err)
	}
	st.Close()
	// Robot accounts are MQTT only (configs/nats-cluster), so r-1 publishes
	// as a robot does: QoS 1 over the MQTT gateway.
	o := mqtt.NewClientOptions().AddBroker(node.MQTTURL()).SetClientID("r-1").SetProtocolVersion(4).
		SetUsername("r-1").SetPassword(natstest.RobotPassword("r-1")).SetAutoReconnect(false)
	rc := mqtt.NewClient(o)
	if tok := rc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatalf("robot r-1 on the MQTT gateway: %v", tok.Error())
	}
	defer rc.Disconnect(250)
	var pending []mqtt.Token
	settle := func() {
		for _, tok := range pending {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Fatalf("publish: %v", tok.Error())
			}
		}
		pending = pending[:0]
	}
	var payloadBytes int
	for i := 0; i < events; i++ {
		sid := fmt.Sprintf("s-%d", i/100)
		eta := float64(100 - i%100)
		ev := protocol.NewSessionEvent("r-1", sid, protocol.SessionProgress{Percent: float64(i % 100), Stage: "quantize",
			Message: fmt.Sprintf("layer %d/100", i%100), ElapsedS: float64(i % 100), EtaS: &eta})
		ev.Seq = int64(i + 1)
		p, err := protocol.Encode(ev)
		if err != nil {
			b.Fatal(err)
		}
		payloadBytes += len(p)
		pending = append(pending, rc.Publish(protocol.MustTopics("").SessionEvents("r-1", sid), 1, false, p))
		if len(pending) == 1000 {
			settle()
		}
	}
	settle()
	conf := filepath.Join(b.TempDir(), "relay.yaml")
	_ = os.WriteFile(conf, []byte(fmt.Sprintf("mqtt:\n  username: %s\n  password: %s\n  client_id: warm\nnats:\n  username: %s\n  password: %s\n",
		natstest.RelayUser, natstest.RelayPassword, natstest.RelayUser, natstest.RelayPassword)), 0o600)

	run := func(withHistory bool) (time.Duration, int64, string) {
		addr := "127.0.0.1:" + strconv.Itoa(freePort(b))
		env := []string{"FLEET_RELAY_LISTEN=" + addr, "FLEET_RELAY_MQTT_BROKER=" + node.MQTTURL(), "FLEET_RELAY_AUTH_SECRET="}
		if withHistory {
			env = append(env, "FLEET_RELAY_NATS_URL="+node.NATSURL())
		}
		t0 := time.Now()
		p := start(b, "fleet-relay", env, "--config", conf)
		for {
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Since(t0) > 5*time.Minute {
				b.Fatalf("not ready after 5 min:\n%s", p.output())
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(t0)
		time.Sleep(500 * time.Millisecond)
		rss := vmRSS(p.cmd.Process.Pid)
		out := p.output()
		_ = p.cmd.Process.Kill()
		_, _ = p.cmd.Process.Wait()
		return took, rss, out
	}
	for i := 0; i < b.N; i++ {
		cold, coldRSS, _ := run(false)
		warm, warmRSS, out := run(true)
		replayed := 0
		if m := regexp.MustCompile(`history replayed[^"\n]*"? events=(\d+)`).FindStringSubmatch(out); m != nil {
			replayed, _ = strconv.Atoi(m[1])
		}
		b.ReportMetric(warm.Seconds(), "s-to-ready")
		b.ReportMetric(float64(warmRSS)/(1<<20), "MiB-rss")
		if path := os.Getenv("WARMSTART_OUT"); path != "" {
			row := fmt.Sprintf("| time to ready | ≤ 5 s for 100,000 events | %.2f s (%d events replayed, %.1f MB of envelopes) | %.2f s |\n"+
				"| RSS after ready | context | %.1f MiB | %.1f MiB |\n",
				warm.Seconds(), replayed, float64(payloadBytes)/1e6, cold.Seconds(),
				float64(warmRSS)/(1<<20), float64(coldRSS)/(1<<20))
			_ = os.WriteFile(path, []byte(row), 0o644)
		}
	}
}

// vmRSS is a process's resident set in bytes.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
