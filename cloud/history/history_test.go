package history

import (
	"context"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/natstest"
)

func robotClient(t *testing.T, url, robot string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(robot).SetUsername(robot).
		SetPassword(natstest.RobotPassword(robot)).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", robot, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func publish(t *testing.T, c mqtt.Client, topic string, retained bool, payload string) {
	t.Helper()
	if tok := c.Publish(topic, 1, retained, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func open(t *testing.T, c *natstest.Cluster, o Options) *Store {
	t.Helper()
	o.URLs = []string{c.NATSURLs()}
	o.Username, o.Password = natstest.RelayUser, natstest.RelayPassword
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSubjectMapping(t *testing.T) {
	for topic, subj := range map[string]string{
		"fleet/v1/robots/r-1/status":              "fleet.v1.robots.r-1.status",
		"fleet/v1/robots/r.1/sessions/s.2/events": "fleet.v1.robots.r//1.sessions.s//2.events",
		"acme.eu/v1/robots/r_9/notifications":     "acme//eu.v1.robots.r_9.notifications",
	} {
		if got := TopicToSubject(topic); got != subj {
			t.Errorf("TopicToSubject(%q) = %q, want %q", topic, got, subj)
		}
		if got := SubjectToTopic(subj); got != topic {
			t.Errorf("SubjectToTopic(%q) = %q, want %q", subj, got, topic)
		}
	}
}

func TestOptionsErrorsNameTheField(t *testing.T) {
	_, err := Open(context.Background(), Options{})
	if err == nil || err.Error() != "history: nats url: required" {
		t.Fatalf("err = %v", err)
	}
	_, err = Open(context.Background(), Options{URLs: []string{"nats://127.0.0.1:1"}, Replicas: 9})
	if err == nil || err.Error() != "history: replicas: must be 1..5" {
		t.Fatalf("err = %v", err)
	}
}

// What robots publish over MQTT lands in the stream, whether or not a relay
// is connected, and comes back in order from Replay and Since.
func TestReplayAndSince(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	s := open(t, c, Options{})
	r1 := robotClient(t, c.Nodes[0].MQTTURL(), "r-1")
	r2 := robotClient(t, c.Nodes[0].MQTTURL(), "r-2")
	publish(t, r1, "fleet/v1/robots/r-1/status", true, `{"seq":1,"type":"robot.status"}`)
	publish(t, r1, "fleet/v1/robots/r-1/metrics", true, `{"seq":2,"type":"robot.metrics"}`) // not kept
	for i := 3; i <= 12; i++ {
		publish(t, r1, "fleet/v1/robots/r-1/sessions/s-1/events", false, fmt.Sprintf(`{"seq":%d}`, i))
	}
	publish(t, r2, "fleet/v1/robots/r-2/alerts", false, `{"seq":5}`)
	publish(t, r1, "fleet/v1/robots/r-1/sessions/s-2/state", true, `{"seq":13}`)

	ctx := context.Background()
	var topics []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		topics = topics[:0]
		_, n, err := s.Replay(ctx, 0, func(topic string, _ []byte) { topics = append(topics, topic) })
		if err != nil {
			t.Fatal(err)
		}
		if n == 13 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(topics) != 13 || topics[0] != "fleet/v1/robots/r-1/status" || topics[12] != "fleet/v1/robots/r-1/sessions/s-2/state" {
		t.Fatalf("replayed %d: %v", len(topics), topics)
	}
	for _, tp := range topics {
		if tp == "fleet/v1/robots/r-1/metrics" {
			t.Fatal("metrics are not kept")
		}
	}

	// Catching up from a stream sequence returns only what came after it.
	last, _, _ := s.Replay(ctx, 0, func(string, []byte) {})
	publish(t, r2, "fleet/v1/robots/r-2/alerts", false, `{"seq":6}`)
	var got []string
	eventually(t, 10*time.Second, "the catch-up", func() bool {
		got = got[:0]
		_, _, err := s.Replay(ctx, last, func(_ string, p []byte) { got = append(got, string(p)) })
		return err == nil && len(got) == 1
	})
	if got[0] != `{"seq":6}` {
		t.Fatalf("catch-up: %v", got)
	}

	evs, complete, err := s.Since(ctx, "r-1", "s-1", 8, 0)
	if err != nil || !complete || len(evs) != 4 || string(evs[0]) != `{"seq":9}` {
		t.Fatalf("since 8 in s-1: %d events, complete %v, err %v", len(evs), complete, err)
	}
	evs, complete, _ = s.Since(ctx, "r-1", "", 0, 0)
	if !complete || len(evs) != 12 {
		t.Fatalf("since 0 for r-1: %d events, complete %v", len(evs), complete)
	}
	evs, _, _ = s.Since(ctx, "r-1", "", 0, 5)
	if len(evs) != 5 {
		t.Fatalf("max 5: %d", len(evs))
	}
	_, complete, _ = s.Since(ctx, "r-2", "", 1, 0)
	if complete {
		t.Fatal("r-2's stream starts at seq 5: a resume from 1 is not complete")
	}
}

// Follow is the relay's live path: every event stored after the given
// stream sequence, in order, including those stored after it started; when
// the stream has already dropped the next one (its size limit here), the
// hole is reported, never skipped in silence.
func TestFollow(t *testing.T) {
	c := natstest.StartCluster(t, 1)
	s := open(t, c, Options{Stream: "FOLLOW_TEST", MaxBytes: 4 << 10})
	r1 := robotClient(t, c.Nodes[0].MQTTURL(), "r-1")
	ev := func(i int) string { return fmt.Sprintf(`{"seq":%d,"pad":"%0200d"}`, i, 0) }
	for i := 1; i <= 40; i++ { // ~10 kB: the oldest leave the 4 KiB stream
		publish(t, r1, "fleet/v1/robots/r-1/sessions/s-1/events", false, ev(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	type got struct {
		payload string
		seq     uint64
	}
	evs := make(chan got, 100)
	gaps := make(chan [2]uint64, 10)
	done := make(chan error, 1)
	go func() {
		done <- s.Follow(ctx, 0, func(topic string, p []byte, seq uint64) {
			if topic != "fleet/v1/robots/r-1/sessions/s-1/events" {
				t.Errorf("topic %q", topic)
			}
			evs <- got{string(p), seq}
		}, func(from, to uint64) { gaps <- [2]uint64{from, to} })
	}()
	var gap [2]uint64
	select {
	case gap = <-gaps:
	case <-time.After(10 * time.Second):
		t.Fatal("no gap reported for the events the stream dropped")
	}
	if gap[0] != 1 || gap[1] < 1 || gap[1] >= 40 {
		t.Fatalf("gap %v, want 1..k (k < 40)", gap)
	}
	next := gap[1] + 1
	for i := 41; i <= 45; i++ { // stored after Follow started
		publish(t, r1, "fleet/v1/robots/r-1/sessions/s-1/events", false, ev(i))
	}
	for ; next <= 45; next++ {
		select {
		case g := <-evs:
			if g.seq != next || g.payload != ev(int(next)) {
				t.Fatalf("event seq %d %.12s…, want stream seq %d", g.seq, g.payload, next)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stream seq %d not delivered", next)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return when its context ended")
	}
}
