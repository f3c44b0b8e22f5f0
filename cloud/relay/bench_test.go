package relay_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/relay"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// latencies collects end-to-end latencies: the publisher stamps its send
// time (UnixNano) into data.message, receivers subtract it.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
	n   atomic.Int64
}

func (l *latencies) add(payload []byte) {
	var ev struct {
		Data struct {
			Message string `json:"message"`
		} `json:"data"`
	}
	if json.Unmarshal(payload, &ev) != nil {
		return
	}
	sent, err := strconv.ParseInt(ev.Data.Message, 10, 64)
	if err != nil {
		return
	}
	d := time.Duration(time.Now().UnixNano() - sent)
	l.mu.Lock()
	l.all = append(l.all, d)
	l.mu.Unlock()
	l.n.Add(1)
}

func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return 0
	}
	s := slices.Clone(l.all)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkFanout: one robot publishes session.progress (~300 B) as fast as
// QoS 1 allows; S clients in the session room receive every event, through
// the relay's /ws and, in the same run, through Mosquitto's websockets
// listener (MQTT over WebSocket, the equivalent topic). Reports deliveries/s
// and p50/p99 end-to-end latency; "lost" counts what never arrived.
//
//	go test -run x -bench Fanout -benchtime 2000x ./cloud/relay/
//
// The rate=N variants publish N events/s instead of as fast as possible:
// 500/s into 200 subscribers is 100k deliveries/s, about half of the
// relay's maximum on the 2-core reference machine (the latency at half
// load of BENCH.md).
func BenchmarkFanout(b *testing.B) {
	for _, c := range []struct{ subs, rate int }{{50, 0}, {200, 0}, {200, 500}} {
		name := fmt.Sprintf("subs=%d", c.subs)
		if c.rate > 0 {
			name += fmt.Sprintf("/rate=%d", c.rate)
		}
		b.Run("relay/"+name, func(b *testing.B) { benchRelay(b, c.subs, c.rate) })
		b.Run("mosquitto-ws/"+name, func(b *testing.B) { benchMosquitto(b, c.subs, c.rate) })
	}
}

func publishN(b *testing.B, url string, n, rate int) time.Duration {
	b.Helper()
	rb := newRobot(b, url, "r-1")
	topic := protocol.MustTopics("").SessionEvents("r-1", "s-1")
	start := time.Now()
	toks := make([]mqtt.Token, 0, 256)
	for i := 0; i < n; i++ {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		rb.seq++
		ev := protocol.NewSessionEvent("r-1", "s-1", protocol.SessionProgress{Percent: 50, Stage: "quantize",
			Message: strconv.FormatInt(time.Now().UnixNano(), 10), ElapsedS: 1})
		ev.Seq = rb.seq
		p, _ := json.Marshal(ev)
		toks = append(toks, rb.c.Publish(topic, 1, false, p))
		if len(toks) == cap(toks) { // bounded in-flight window
			for _, t := range toks {
				t.Wait()
			}
			toks = toks[:0]
		}
	}
	for _, t := range toks {
		t.Wait()
	}
	return time.Since(start)
}

func report(b *testing.B, l *latencies, want int64, start time.Time) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	b.ReportMetric(float64(l.n.Load())/el.Seconds(), "deliveries/s")
	b.ReportMetric(float64(l.pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(want-l.n.Load()), "lost")
}

func benchRelay(b *testing.B, subs, rate int) {
	cfg := testConfig()
	cfg.WS.QueueBytes = 16 << 20 // measure throughput, not the slow-consumer policy
	r := startRelay(b, cfg)
	l := &latencies{}
	for i := 0; i < subs; i++ {
		conn, _, err := websocket.DefaultDialer.Dial(wsURL(r), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		_ = conn.WriteJSON(map[string]any{"op": "subscribe", "room": "session:s-1"})
		go func() {
			for {
				_, m, err := conn.ReadMessage()
				if err != nil {
					return
				}
				var f struct {
					Type  string          `json:"type"`
					Event json.RawMessage `json:"event"`
				}
				if json.Unmarshal(m, &f) == nil && f.Type == "event" {
					l.add(f.Event)
				}
			}
		}()
	}
	waitSubscriptions(b, r, subs)
	b.ResetTimer()
	start := time.Now()
	publishN(b, r.BrokerURL(), b.N, rate)
	report(b, l, int64(b.N*subs), start)
}

func waitSubscriptions(b *testing.B, r *relay.Relay, n int) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.Hub().Counts().Subscriptions < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d subscribed", r.Hub().Counts().Subscriptions, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func benchMosquitto(b *testing.B, subs, rate int) {
	m := brokertest.StartMosquitto(b, brokertest.Options{WebSockets: true})
	brokertest.WaitPort(b, "127.0.0.1:"+strconv.Itoa(m.WSPort), wait)
	l := &latencies{}
	filter := protocol.MustTopics("").SessionEvents("r-1", "s-1")
	for i := 0; i < subs; i++ {
		o := mqtt.NewClientOptions().AddBroker("ws://127.0.0.1:" + strconv.Itoa(m.WSPort) + "/").
			SetClientID("sub-" + strconv.Itoa(i)).SetAutoReconnect(false)
		c := mqtt.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		b.Cleanup(func() { c.Disconnect(0) })
		tok := c.Subscribe(filter, 1, func(_ mqtt.Client, msg mqtt.Message) { l.add(msg.Payload()) })
		if !tok.WaitTimeout(wait) || tok.Error() != nil {
			b.Fatalf("subscribe: %v", tok.Error())
		}
	}
	b.ResetTimer()
	start := time.Now()
	publishN(b, m.URL(), b.N, rate)
	report(b, l, int64(b.N*subs), start)
}
