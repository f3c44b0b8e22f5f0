package socketio

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/wsapi"
	"github.com/robotfleet/fleetlink/protocol"
)

// BenchmarkFanout measures event deliveries per second from hub.Ingest to
// WebSocket clients of the Socket.IO endpoint, and of the JSON /ws API in
// the same run as the peer. Each op is one session.progress event
// delivered to every client; at most `window` events are in flight, so
// nothing is dropped.
//
//	go test -run x -bench Fanout -benchtime 20000x ./cloud/socketio/
func BenchmarkFanout(b *testing.B) {
	for _, clients := range []int{10, 100} {
		b.Run(fmt.Sprintf("socketio/clients=%d", clients), func(b *testing.B) { benchFanout(b, clients, true) })
		b.Run(fmt.Sprintf("wsapi/clients=%d", clients), func(b *testing.B) { benchFanout(b, clients, false) })
	}
}

func benchFanout(b *testing.B, clients int, sio bool) {
	const robot, sess, window = "r-bench", "s-bench", 64
	h := hub.New(hub.Options{})
	a, err := auth.New(auth.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var handler http.Handler
	var path string
	var stats *conn.Stats
	if sio {
		srv, err := New(Options{Hub: h, Auth: a, PingInterval: time.Hour, PingTimeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		handler, path, stats = srv, "/socket.io/?EIO=4&transport=websocket", srv.ConnStats()
	} else {
		ws, err := wsapi.New(wsapi.Options{Hub: h, Auth: a})
		if err != nil {
			b.Fatal(err)
		}
		handler, path, stats = ws, "/ws", ws.ConnStats()
	}
	ts := httptest.NewServer(handler)
	defer ts.Close()

	var delivered atomic.Int64
	prefix := []byte(`42["session_progress"`)
	if !sio {
		prefix = []byte(`{"type":"event"`)
	}
	for range clients {
		conn, _, err := websocket.DefaultDialer.Dial(strings.Replace(ts.URL, "http", "ws", 1)+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		if sio {
			mustRead(b, conn, "0{")
			mustWrite(b, conn, `40{}`)
			mustWrite(b, conn, `42["subscribe_session",{"session_id":"`+sess+`"}]`)
			mustRead(b, conn, `42["subscribed"`)
		} else {
			mustWrite(b, conn, `{"op":"subscribe","room":"session:`+sess+`"}`)
			mustRead(b, conn, `{"type":"subscribed"`)
		}
		go func() {
			for {
				_, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				if bytes.HasPrefix(msg, prefix) {
					delivered.Add(1)
				}
			}
		}()
	}
	evs := make([]*protocol.Event, b.N)
	raws := make([][]byte, b.N)
	for i := range evs {
		ev := protocol.NewSessionEvent(robot, sess, protocol.SessionProgress{Percent: 50, Stage: "quantize", Message: "layer 12/28", ElapsedS: 31.2})
		ev.Seq = int64(i + 1)
		raws[i], _ = protocol.Encode(ev)
		evs[i] = ev
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for int64(i-window)*int64(clients) > delivered.Load() {
			time.Sleep(20 * time.Microsecond)
		}
		h.Ingest(evs[i], raws[i], false)
	}
	want := int64(b.N) * int64(clients)
	deadline := time.Now().Add(time.Minute)
	for delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d (dropped %d)", delivered.Load(), want, stats.Queues.Dropped.Load())
		}
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(want)/time.Since(start).Seconds(), "deliveries/s")
	b.ReportMetric(float64(stats.Queues.Dropped.Load()), "dropped")
}

func mustWrite(b *testing.B, c *websocket.Conn, s string) {
	b.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		b.Fatal(err)
	}
}

func mustRead(b *testing.B, c *websocket.Conn, prefix string) {
	b.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(string(msg), prefix) {
			return
		}
	}
}

// BenchmarkFormat measures building one event frame.
func BenchmarkFormat(b *testing.B) {
	ti, _ := protocol.Lookup(protocol.TypeSessionProgress)
	raw, _ := protocol.Encode(ti.Example())
	f := &Format{}
	b.ReportAllocs()
	for range b.N {
		ev := &protocol.Event{Type: protocol.TypeSessionProgress}
		if _, err := f.Event("session:s", ev, raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIdle measures the memory of idle WebSocket connections, each in
// room fleet, for the Socket.IO endpoint and for the JSON /ws API in the
// same run. The clients live in the same process and cost the same for
// both, so compare the two figures rather than reading either as the
// server's alone.
//
//	go test -run x -bench Idle -benchtime 1x ./cloud/socketio/
func BenchmarkIdle(b *testing.B) {
	const conns = 2000
	for _, sio := range []bool{true, false} {
		name := "wsapi"
		if sio {
			name = "socketio"
		}
		b.Run(fmt.Sprintf("%s/conns=%d", name, conns), func(b *testing.B) {
			for range b.N {
				benchIdle(b, conns, sio)
			}
		})
	}
}

func benchIdle(b *testing.B, conns int, sio bool) {
	h := hub.New(hub.Options{})
	a, err := auth.New(auth.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var handler http.Handler
	var path string
	if sio {
		srv, err := New(Options{Hub: h, Auth: a, PingInterval: time.Hour, PingTimeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		handler, path = srv, "/socket.io/?EIO=4&transport=websocket"
	} else {
		ws, err := wsapi.New(wsapi.Options{Hub: h, Auth: a})
		if err != nil {
			b.Fatal(err)
		}
		handler, path = ws, "/ws"
	}
	ts := httptest.NewServer(handler)
	defer ts.Close()
	dialer := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512}
	before := memInUse()
	list := make([]*websocket.Conn, 0, conns)
	for range conns {
		conn, _, err := dialer.Dial(strings.Replace(ts.URL, "http", "ws", 1)+path, nil)
		if err != nil {
			b.Fatal(err)
		}
		list = append(list, conn)
		if sio {
			mustRead(b, conn, "0{")
			mustWrite(b, conn, `40{}`)
			mustWrite(b, conn, `42["subscribe_fleet"]`)
			mustRead(b, conn, `42["subscribed"`)
		} else {
			mustWrite(b, conn, `{"op":"subscribe","room":"fleet"}`)
			mustRead(b, conn, `{"type":"subscribed"`)
		}
	}
	b.ReportMetric(float64(memInUse()-before)/float64(conns), "bytes/conn")
	for _, c := range list {
		c.Close()
	}
}

// memInUse returns heap and stack bytes in use after a GC.
func memInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
