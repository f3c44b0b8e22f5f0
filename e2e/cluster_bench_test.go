package e2e

// BENCH.md scenario "cluster": the same fan-out load through 2 relay
// replicas on a 3-node NATS cluster, through 1 relay on 1 NATS node, and
// through 1 relay on its embedded broker (the cost of NATS's MQTT gateway),
// in one run. Run by scripts/bench/cluster.sh (go test -run '^$' -bench
// Cluster ./e2e/). A fixed load, not a ramp: the point is what the same
// load costs in each shape.

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/internal/natstest"
	"github.com/robotfleet/fleetlink/protocol"
)

type clusterLoad struct {
	sessions, subs int           // session rooms, WebSocket clients per room
	rate           int           // events/s over all sessions
	dur            time.Duration // measured time
}

type loadResult struct {
	name                 string
	published, delivered int64
	p50, p99             time.Duration
	perSec               float64
}

// runLoad publishes session.progress at load.rate through brokers (two
// robot accounts, half the sessions each) and counts what the WebSocket
// clients spread over relays receive.
func runLoad(b *testing.B, name string, relays []string, broker string, creds bool, load clusterLoad) loadResult {
	b.Helper()
	var delivered atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	var conns []*websocket.Conn
	for s := 0; s < load.sessions; s++ {
		for j := 0; j < load.subs; j++ {
			url := "ws://" + relays[(s*load.subs+j)%len(relays)] + "/ws"
			c, _, err := websocket.DefaultDialer.Dial(url, nil)
			if err != nil {
				b.Fatalf("%s: dial %s: %v", name, url, err)
			}
			conns = append(conns, c)
			_ = c.WriteJSON(map[string]any{"op": "subscribe", "room": fmt.Sprintf("session:s-b%d", s)})
			go func() {
				for {
					_, msg, err := c.ReadMessage()
					if err != nil {
						return
					}
					var f struct {
						Type  string `json:"type"`
						Event struct {
							TS time.Time `json:"ts"`
						} `json:"event"`
					}
					if json.Unmarshal(msg, &f) == nil && f.Type == "event" {
						delivered.Add(1)
						l := time.Since(f.Event.TS)
						mu.Lock()
						if len(lats) < 1<<20 {
							lats = append(lats, l)
						}
						mu.Unlock()
					}
				}
			}()
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	time.Sleep(2 * time.Second) // subscriptions settle
	var pubs []mqtt.Client
	for _, robot := range []string{"r-1", "r-2"} {
		o := mqtt.NewClientOptions().AddBroker(broker).SetClientID("bench-" + robot).SetAutoReconnect(false)
		if creds {
			o.SetUsername(robot).SetPassword(natstest.RobotPassword(robot))
		}
		p := mqtt.NewClient(o)
		if tok := p.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("%s: publisher %s: %v", name, robot, tok.Error())
		}
		defer p.Disconnect(0)
		pubs = append(pubs, p)
	}
	var published atomic.Int64
	var seq atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range pubs {
		robot := []string{"r-1", "r-2"}[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			perPub := float64(load.rate) / float64(len(pubs))
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			sent := 0
			for now := range tick.C {
				el := now.Sub(start)
				if el >= load.dur {
					return
				}
				for due := int(perPub * el.Seconds()); sent < due; sent++ {
					s := 2*(sent%(load.sessions/2)) + i
					sid := fmt.Sprintf("s-b%d", s)
					ev := protocol.NewSessionEvent(robot, sid, protocol.SessionProgress{Percent: 50, Stage: "bench", ElapsedS: 1})
					ev.Seq = seq.Add(1)
					raw, _ := protocol.Encode(ev)
					p.Publish("fleet/v1/robots/"+robot+"/sessions/"+sid+"/events", 1, false, raw)
					published.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(2 * time.Second) // drain
	res := loadResult{name: name, published: published.Load(), delivered: delivered.Load()}
	res.perSec = float64(res.delivered) / load.dur.Seconds()
	mu.Lock()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	if n := len(lats); n > 0 {
		res.p50, res.p99 = lats[n/2], lats[n*99/100]
	}
	mu.Unlock()
	return res
}

func BenchmarkCluster(b *testing.B) {
	load := clusterLoad{sessions: 10, subs: 20, rate: 1000, dur: 15 * time.Second}
	if v, err := strconv.Atoi(os.Getenv("CLUSTER_RATE")); err == nil && v > 0 {
		load.rate = v
	}
	for i := 0; i < b.N; i++ {
		var rows []loadResult
		{
			c := natstest.StartCluster(b, 3)
			a := startBenchReplica(b, c, c.Nodes[0], "bench-a")
			r2 := startBenchReplica(b, c, c.Nodes[1], "bench-b")
			rows = append(rows, runLoad(b, "2 relay replicas, 3-node NATS cluster (robots on node 3)", []string{a, r2}, c.Nodes[2].MQTTURL(), true, load))
			one := startBenchReplica(b, c, c.Nodes[0], "bench-one")
			rows = append(rows, runLoad(b, "1 relay, 3-node NATS cluster (robots on node 3)", []string{one}, c.Nodes[2].MQTTURL(), true, load))
		}
		{
			c := natstest.StartCluster(b, 1)
			one := startBenchReplica(b, c, c.Nodes[0], "bench-single")
			rows = append(rows, runLoad(b, "1 relay, 1 NATS node", []string{one}, c.Nodes[0].MQTTURL(), true, load))
		}
		{
			httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(b))
			mqttAddr := "127.0.0.1:" + strconv.Itoa(freePort(b))
			start(b, "fleet-relay", []string{"FLEET_RELAY_LISTEN=" + httpAddr, "FLEET_RELAY_MQTT_BROKER=",
				"FLEET_RELAY_EMBEDDED_MQTT_LISTEN=" + mqttAddr, "FLEET_RELAY_AUTH_SECRET="})
			waitReady(b, &system{httpAddr: httpAddr}, 30*time.Second)
			rows = append(rows, runLoad(b, "1 relay, its embedded broker", []string{httpAddr}, "tcp://"+mqttAddr, false, load))
		}
		if path := os.Getenv("CLUSTER_OUT"); path != "" {
			var out string
			for _, r := range rows {
				out += fmt.Sprintf("| %s | %d | %d | %.0f | %.1f ms | %.1f ms | %d |\n", r.name, r.published, r.delivered, r.perSec,
					float64(r.p50.Microseconds())/1000, float64(r.p99.Microseconds())/1000, max(r.published*int64(load.subs)-r.delivered, 0))
			}
			_ = os.WriteFile(path, []byte(out), 0o644)
		}
		for _, r := range rows {
			b.Logf("%s: published %d delivered %d (%.0f/s) p50 %s p99 %s", r.name, r.published, r.delivered, r.perSec, r.p50, r.p99)
		}
	}
}

// startBenchReplica is a relay on a NATS node with history, ready.
func startBenchReplica(b *testing.B, c *natstest.Cluster, node *natstest.Node, id string) string {
	b.Helper()
	conf := b.TempDir() + "/relay.yaml"
	yaml := fmt.Sprintf("mqtt:\n  username: %s\n  password: %s\n  client_id: %s\nnats:\n  username: %s\n  password: %s\n",
		natstest.RelayUser, natstest.RelayPassword, id, natstest.RelayUser, natstest.RelayPassword)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(b))
	start(b, "fleet-relay", []string{"FLEET_RELAY_LISTEN=" + addr, "FLEET_RELAY_MQTT_BROKER=" + node.MQTTURL(),
		"FLEET_RELAY_NATS_URL=" + c.NATSURLs(), "FLEET_RELAY_AUTH_SECRET="}, "--config", conf)
	waitReady(b, &system{httpAddr: addr}, 60*time.Second)
	return addr
}
