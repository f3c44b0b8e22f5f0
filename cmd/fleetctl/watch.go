package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register("watch", command{summary: "print the events robots publish, one line each", run: runWatch})
}

// mqttConfig is how fleetctl reaches the broker. Flags fill it, with
// defaults from the environment.
type mqttConfig struct {
	Broker         string        // --broker, FLEETCTL_BROKER; default tcp://127.0.0.1:1883
	Prefix         string        // --prefix, FLEETCTL_TOPIC_PREFIX; default "fleet"
	Username       string        // --username, FLEETCTL_USERNAME; default none
	Password       string        // --password, FLEETCTL_PASSWORD; default none
	ConnectTimeout time.Duration // --connect-timeout; default 10s
}

// defaultBroker is the broker when neither --broker nor FLEETCTL_BROKER says.
const defaultBroker = "tcp://127.0.0.1:1883"

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// addMQTTFlags registers the broker flags on fs; their defaults come from
// the environment, read now.
func addMQTTFlags(fs *flag.FlagSet) *mqttConfig {
	c := &mqttConfig{}
	fs.StringVar(&c.Broker, "broker", envOr("FLEETCTL_BROKER", defaultBroker), "MQTT broker URL: tcp://, ssl://, ws:// or wss:// (env FLEETCTL_BROKER)")
	fs.StringVar(&c.Prefix, "prefix", envOr("FLEETCTL_TOPIC_PREFIX", protocol.DefaultPrefix), "topic prefix (env FLEETCTL_TOPIC_PREFIX)")
	fs.StringVar(&c.Username, "username", os.Getenv("FLEETCTL_USERNAME"), "MQTT username (env FLEETCTL_USERNAME)")
	fs.StringVar(&c.Password, "password", os.Getenv("FLEETCTL_PASSWORD"), "MQTT password (env FLEETCTL_PASSWORD)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "how long to wait for the broker")
	return c
}

// topics validates the prefix.
func (c *mqttConfig) topics() (protocol.Topics, error) {
	t, err := protocol.NewTopics(c.Prefix)
	if err != nil {
		return t, fmt.Errorf("--prefix: %w", err)
	}
	return t, nil
}

// connect opens an MQTT connection. onConnect runs on every (re)connect,
// so subscriptions made there survive a broker restart.
func (c *mqttConfig) connect(ctx context.Context, role string, reconnect bool, onConnect mqtt.OnConnectHandler, onLost mqtt.ConnectionLostHandler) (mqtt.Client, error) {
	if c.Broker == "" {
		return nil, fmt.Errorf("%w: --broker is empty", errUsage)
	}
	opts := mqtt.NewClientOptions().
		AddBroker(c.Broker).
		SetClientID("fleetctl-" + role + "-" + randomHex(4)).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetCleanSession(true).
		SetConnectTimeout(c.ConnectTimeout).
		SetAutoReconnect(reconnect).
		SetOrderMatters(true) // arrival order; handlers only enqueue, never block
	if onConnect != nil {
		opts.SetOnConnectHandler(onConnect)
	}
	if onLost != nil {
		opts.SetConnectionLostHandler(onLost)
	}
	client := mqtt.NewClient(opts)
	if err := waitToken(ctx, client.Connect(), c.ConnectTimeout+time.Second); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.Broker, err)
	}
	return client, nil
}

// waitToken waits for an MQTT operation, the timeout or ctx.
func waitToken(ctx context.Context, tok mqtt.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-timer.C:
		return fmt.Errorf("no answer from the broker within %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments (fleetctl send r-1 ping --timeout 3s).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errUsage, err) // exit 2, as for any usage error
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
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

func runWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: fleetctl watch [flags] [ROBOT]\n\nPrints every message under fleet/v1/robots/ROBOT/# (all robots without ROBOT),\none line each: time, topic, type and a summary.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	mc := addMQTTFlags(fs)
	rawJSON := fs.Bool("json", false, "print the raw payloads, one per line, instead of summaries")
	count := fs.Int("count", 0, "exit after this many messages (0: until interrupted)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("%w: at most one ROBOT, got %q", errUsage, pos)
	}
	topics, err := mc.topics()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
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
			err := waitToken(ctx, tok, mc.ConnectTimeout)
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
		fmt.Fprintf(stderr, "fleetctl watch: connection lost: %v; reconnecting\n", err)
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
			fmt.Fprintf(stderr, "fleetctl watch: watching %s on %s\n", filter, mc.Broker)
		case m := <-q.ch:
			q.done(m)
			if recent.seen(m.Payload()) {
				continue // a QoS 1 redelivery: receivers de-duplicate by event id
			}
			if *rawJSON {
				fmt.Fprintf(stdout, "%s\n", m.Payload())
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

func reportDropped(w io.Writer, q *msgQueue) {
	if n := q.dropped.Load(); n > 0 {
		fmt.Fprintf(w, "fleetctl watch: dropped %d messages while output was slow\n", n)
	}
}

// watchLine formats one message: time, topic, type, summary. The time is
// the event's ts; now when the payload has none.
func watchLine(topics protocol.Topics, topic string, payload []byte, retained bool, now time.Time) string {
	ts := now.UTC().Format("15:04:05.000")
	mark := ""
	if retained {
		mark = " (retained)"
	}
	ev, err := protocol.Decode(payload)
	if err != nil {
		return fmt.Sprintf("%s %s%s INVALID %s", ts, topic, mark, err)
	}
	ts = ev.TS.UTC().Format("15:04:05.000")
	line := fmt.Sprintf("%s %s%s %s %s", ts, topic, mark, ev.Type, summary(ev))
	if tp, err := topics.Parse(topic); err != nil {
		line += " WRONG TOPIC: " + err.Error()
	} else if err := tp.Matches(ev); err != nil {
		line += " WRONG TOPIC: " + err.Error()
	}
	return line
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
