package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "watch",
		args:    "[ROBOT]",
		summary: "print the events robots publish, one line each",
		help: "Prints every message under fleet/v1/robots/ROBOT/# (all robots without ROBOT),\n" +
			"one line each: time, topic, type and a summary. Robot-supplied text is printed\n" +
			"with control characters escaped (\\x1b, \\n), so no payload can drive the terminal.\n" +
			"With --json, each payload is printed as one line of compact JSON instead.",
		define: defineWatch,
	})
}

// msgQueue hands messages from paho's callbacks to the printing loop without
// ever blocking the callback. It is capped in bytes; what does not fit is
// dropped and counted.
type msgQueue struct {
	ch       chan mqtt.Message
	bytes    atomic.Int64 // payload and topic bytes queued
	maxBytes int64
	dropped  atomic.Int64
}

func newMsgQueue(maxBytes int64) *msgQueue {
	return &msgQueue{ch: make(chan mqtt.Message, 4096), maxBytes: maxBytes}
}

func msgSize(m mqtt.Message) int64 { return int64(len(m.Payload()) + len(m.Topic())) }

func (q *msgQueue) push(m mqtt.Message) {
	n := msgSize(m)
	if q.bytes.Add(n) > q.maxBytes {
		q.bytes.Add(-n)
		q.dropped.Add(1)
		return
	}
	select {
	case q.ch <- m:
	default:
		q.bytes.Add(-n)
		q.dropped.Add(1)
	}
}

func (q *msgQueue) done(m mqtt.Message) { q.bytes.Add(-msgSize(m)) }

// watchQueueBytes caps what watch buffers while the terminal is slow.
const watchQueueBytes = 16 << 20

func defineWatch(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	asJSON := fs.Bool("json", false, "print the payloads as compact JSON, one per line, instead of summaries")
	count := fs.Int("count", 0, "exit after this many messages (0: until interrupted)")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		if len(pos) > 1 {
			return fmt.Errorf("%w: at most one ROBOT, got %q", errUsage, pos)
		}
		if err := mc.load(stderr); err != nil {
			return err
		}
		topics := mc.Topics
		filter := topics.AllRobots()
		if len(pos) == 1 {
			if err := protocol.CheckID("robot id", pos[0]); err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			filter = topics.RobotTree(pos[0])
		}

		q := newMsgQueue(watchQueueBytes)
		// subscribed carries the result of each (re)subscription, made on every
		// connect; the loop announces it, so "watching" means messages flow.
		subscribed := make(chan error, 1)
		onConnect := func(c mqtt.Client) {
			tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { q.push(m) })
			go func() { // never wait inside a paho callback
				err := mqttkit.Wait(ctx, tok, mc.ConnectTimeout)
				if err != nil {
					err = fmt.Errorf("subscribe %s: %w", filter, err)
				}
				select {
				case subscribed <- err:
				default:
				}
			}()
		}
		onLost := func(_ mqtt.Client, err error) {
			fmt.Fprintf(stderr, "fleetctl watch: connection lost: %s; reconnecting\n", clean(err.Error()))
		}
		client, err := mc.connect(ctx, "watch", true, onConnect, onLost)
		if err != nil {
			return err
		}
		defer client.Disconnect(250)

		seen := 0
		recent := newRecentIDs(4096)
		for {
			select {
			case <-ctx.Done():
				reportDropped(stderr, q)
				return nil // interrupted: the normal way to stop watching
			case err := <-subscribed:
				if err != nil {
					return err
				}
				fmt.Fprintf(stderr, "fleetctl watch: watching %s on %s\n", filter, mc.broker())
			case m := <-q.ch:
				q.done(m)
				if recent.seen(m.Payload()) {
					continue // a QoS 1 redelivery: receivers de-duplicate by event id
				}
				if *asJSON {
					fmt.Fprintln(stdout, payloadLine(m.Payload()))
				} else {
					fmt.Fprintln(stdout, watchLine(topics, m.Topic(), m.Payload(), m.Retained(), time.Now()))
				}
				seen++
				if *count > 0 && seen >= *count {
					reportDropped(stderr, q)
					return nil
				}
			}
		}
	}
}

func reportDropped(w io.Writer, q *msgQueue) {
	if n := q.dropped.Load(); n > 0 {
		fmt.Fprintf(w, "fleetctl watch: dropped %d messages while output was slow\n", n)
	}
}

// watchLine formats one message: time, topic, type, summary. The time is
// the event's ts; now when the payload has none. Every part may carry
// robot-supplied text (the topic too), so the whole line is cleaned.
func watchLine(topics protocol.Topics, topic string, payload []byte, retained bool, now time.Time) string {
	ts := now.UTC().Format("15:04:05.000")
	mark := ""
	if retained {
		mark = " (retained)"
	}
	ev, err := protocol.Decode(payload)
	if err != nil {
		return cleanf("%s %s%s INVALID %s", ts, topic, mark, err)
	}
	ts = ev.TS.UTC().Format("15:04:05.000")
	line := fmt.Sprintf("%s %s%s %s %s", ts, topic, mark, ev.Type, summary(ev))
	if tp, err := topics.Parse(topic); err != nil {
		line += " WRONG TOPIC: " + err.Error()
	} else if err := tp.Matches(ev); err != nil {
		line += " WRONG TOPIC: " + err.Error()
	}
	return clean(line)
}

// summary is a short human description of an event's data.
func summary(ev *protocol.Event) string {
	switch d := ev.Data.(type) {
	case protocol.RobotStatus:
		if d.State == "offline" {
			return fmt.Sprintf("offline (%s)", d.Reason)
		}
		return fmt.Sprintf("online agent %s %s/%s host %q, %d pipelines, %d models", d.AgentVersion, d.OS, d.Arch, d.Hostname, len(d.Pipelines), len(d.Models))
	case protocol.RobotMetrics:
		s := fmt.Sprintf("cpu %.1f%% load %.2f mem %.1f%%", d.CPU.Percent, d.CPU.Load1, d.Memory.Percent)
		for _, disk := range d.Disks {
			s += fmt.Sprintf(" disk %s %.0f%%", disk.Mount, disk.Percent)
		}
		if len(d.Temperatures) > 0 {
			hot := d.Temperatures[0]
			for _, t := range d.Temperatures {
				if t.Celsius > hot.Celsius {
					hot = t
				}
			}
			s += fmt.Sprintf(" temp %.1f°C (%s)", hot.Celsius, hot.Sensor)
		}
		for _, g := range d.GPUs {
			s += fmt.Sprintf(" gpu%d %.0f%%", g.Index, g.UtilPercent)
		}
		return s + fmt.Sprintf(" spool %d", d.Agent.SpoolDepth)
	case protocol.RobotAlert:
		return fmt.Sprintf("%s %s %s: %q (value %g, threshold %g)", d.Severity, d.State, d.Alert, d.Message, d.Value, d.Threshold)
	case protocol.RobotNotification:
		return fmt.Sprintf("%s %q: %q", d.Level, d.Title, d.Message)
	case protocol.SessionQueued:
		return fmt.Sprintf("%s %s, position %d", d.Pipeline, d.Model, d.Position)
	case protocol.SessionStarted:
		return fmt.Sprintf("%s %s, estimate %s", d.Pipeline, d.Model, seconds(d.EstimatedDurationS))
	case protocol.SessionProgress:
		return fmt.Sprintf("%.1f%% %s %q elapsed %.1fs eta %s", d.Percent, d.Stage, d.Message, d.ElapsedS, seconds(d.EtaS))
	case protocol.SessionCompleted:
		return fmt.Sprintf("in %.1fs, %d artifacts", d.DurationS, len(d.Result.Artifacts))
	case protocol.SessionFailed:
		return fmt.Sprintf("after %.1fs: %s: %q", d.DurationS, d.Error.Code, d.Error.Message)
	case protocol.SessionCancelled:
		return fmt.Sprintf("after %.1fs by %q: %q", d.DurationS, d.By, d.Reason)
	case protocol.SessionState:
		return fmt.Sprintf("%s %s %s %.1f%% %s", d.Status, d.Pipeline, d.Model, d.Percent, d.Stage)
	case protocol.Command:
		return fmt.Sprintf("%s id %s args %s", d.Name, ev.ID, compactJSON(d.Args))
	case protocol.CommandReply:
		if !d.OK && d.Error != nil {
			return fmt.Sprintf("error for %s: %s: %q", d.CommandID, d.Error.Code, d.Error.Message)
		}
		return fmt.Sprintf("ok for %s: %s", d.CommandID, compactJSON(d.Result))
	case protocol.SystemStatus:
		return fmt.Sprintf("%d/%d robots online, %d sessions running", d.RobotsOnline, d.RobotsKnown, d.SessionsRunning)
	}
	return ""
}

func seconds(p *float64) string {
	if p == nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1fs", *p)
}

// compactJSON renders v on one line, clipped.
func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return "?"
	}
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

// recentIDs remembers the last n event ids, so a message the broker delivers
// twice (QoS 1 is at least once) is printed once.
type recentIDs struct {
	ids  map[string]struct{}
	fifo []string
	next int
}

func newRecentIDs(n int) *recentIDs {
	return &recentIDs{ids: make(map[string]struct{}, n), fifo: make([]string, n)}
}

// seen reports whether payload's event id was seen already, and remembers
// it. Payloads without an id (invalid ones) are never duplicates.
func (r *recentIDs) seen(payload []byte) bool {
	var env struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(payload, &env) != nil || env.ID == "" {
		return false
	}
	if _, ok := r.ids[env.ID]; ok {
		return true
	}
	delete(r.ids, r.fifo[r.next])
	r.fifo[r.next] = env.ID
	r.ids[env.ID] = struct{}{}
	r.next = (r.next + 1) % len(r.fifo)
	return false
}
