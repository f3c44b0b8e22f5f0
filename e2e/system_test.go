package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A dashboard client starts an optimization on a real agent through the
// relay and sees the session's whole life in order in the session room.
func TestStartSessionThroughRelay(t *testing.T) {
	s := startRelay(t)
	s.startAgent(t, "r-e2e-1")
	c := dial(t, s)
	c.send(map[string]any{"op": "subscribe", "room": "robot:r-e2e-1"})
	c.waitFor(20*time.Second, "robot r-e2e-1 online", func(f map[string]any) bool {
		if f["type"] == "subscribed" {
			for _, e := range f["snapshot"].([]any) {
				ev := e.(map[string]any)
				if ev["type"] == "robot.status" && ev["data"].(map[string]any)["state"] == "online" {
					return true
				}
			}
		}
		return f["type"] == "event" && f["event"].(map[string]any)["type"] == "robot.status"
	})
	c.send(map[string]any{"op": "command", "robot": "r-e2e-1", "name": "start_session", "ref": "1",
		"args": map[string]any{"pipeline": "quantize-int8", "model": "cnn_opset17.onnx", "session_id": "s-e2e-1"}})
	// The robot room carries every session event; collect them in order,
	// whether they arrive before or after the command's reply.
	var types []string
	var lastSeq float64
	var reply map[string]any
	done := false
	c.waitFor(60*time.Second, "command_reply and session.completed", func(f map[string]any) bool {
		switch f["type"] {
		case "command_reply":
			reply = f
		case "event":
			ev := f["event"].(map[string]any)
			if ev["session"] != "s-e2e-1" {
				break
			}
			if seq := ev["seq"].(float64); seq <= lastSeq {
				t.Fatalf("seq went from %v to %v", lastSeq, seq)
			} else {
				lastSeq = seq
			}
			typ := ev["type"].(string)
			if typ != "session.state" {
				types = append(types, typ)
			}
			if typ == "session.failed" {
				t.Fatalf("session failed: %v", ev["data"])
			}
			done = done || typ == "session.completed"
		}
		return done && reply != nil
	})
	if reply["ok"] != true || reply["ref"] != "1" {
		t.Fatalf("command_reply %v", reply)
	}
	joined := strings.Join(types, " ")
	if !strings.HasPrefix(joined, "session.queued session.started") || !strings.HasSuffix(joined, "session.completed") {
		t.Fatalf("session events out of order: %s", joined)
	}
}

// When an agent dies (kill -9) the broker publishes its Last Will; the relay
// must show the robot offline (reason lost) even though the Will was armed,
// and numbered, before the agent's online status.
func TestKilledAgentShowsOffline(t *testing.T) {
	s := startRelay(t)
	agent := s.startAgent(t, "r-dies")
	c := dial(t, s)
	c.send(map[string]any{"op": "subscribe", "room": "fleet"})
	c.waitFor(20*time.Second, "r-dies online", func(f map[string]any) bool {
		return statusOf(f, "r-dies") == "online"
	})
	if err := agent.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.waitFor(20*time.Second, "r-dies offline in room fleet", func(f map[string]any) bool {
		return statusOf(f, "r-dies") == "offline"
	})
	resp, err := http.Get("http://" + s.httpAddr + "/api/v1/robots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Robots []struct {
			ID     string          `json:"id"`
			Status json.RawMessage `json:"status"`
		} `json:"robots"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("/api/v1/robots: %v: %s", err, raw)
	}
	if !strings.Contains(string(raw), `"offline"`) || !strings.Contains(string(raw), `"lost"`) {
		t.Fatalf("/api/v1/robots still shows r-dies online: %s", raw)
	}
}

// statusOf returns the state of robot's robot.status carried by frame f
// (an event or a subscribed snapshot), or "".
func statusOf(f map[string]any, robot string) string {
	var envs []any
	switch f["type"] {
	case "event":
		envs = []any{f["event"]}
	case "subscribed":
		envs, _ = f["snapshot"].([]any)
	}
	state := ""
	for _, e := range envs {
		ev, _ := e.(map[string]any)
		if ev["type"] == "robot.status" && ev["robot"] == robot {
			state, _ = ev["data"].(map[string]any)["state"].(string)
		}
	}
	return state
}
