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
