package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

func init() {
	register(&command{
		name:    "doctor",
		args:    "[ROBOT]",
		summary: "check robots' health from their retained status and metrics, and ping one",
		help: "Reads the retained status and metrics of ROBOT (all robots without ROBOT)\n" +
			"and prints one check per line: OK, WARN or FAIL. With ROBOT online it also\n" +
			"pings it. It reads until the broker has sent no retained message for --quiet,\n" +
			"at most --wait. Exits 1 when a check fails or no robot is found.",
		define: defineDoctor,
	})
}

// Check levels, worst last.
const (
	levelOK   = "OK"
	levelWarn = "WARN"
	levelFail = "FAIL"
)

const (
	// doctorSpoolDeep is the outbox depth worth a warning: the robot has
	// that many events it could not deliver yet.
	doctorSpoolDeep = 1000
	// doctorClockSkew is how far in the future a metrics ts may be before
	// the robot's clock is called wrong.
	doctorClockSkew = 5 * time.Second
	// doctorMaxInvalid caps the invalid payloads kept per robot; the rest
	// are counted.
	doctorMaxInvalid = 5
)

// doctorCheck is one line of a robot's report.
type doctorCheck struct {
	Name   string `json:"name"`
	Level  string `json:"level"` // OK, WARN or FAIL
	Detail string `json:"detail"`
}

// robotReport is the checks of one robot.
type robotReport struct {
	Robot  string        `json:"robot"`
	Checks []doctorCheck `json:"checks"`
}

// doctorReport is what doctor prints, as text or --json.
type doctorReport struct {
	Broker  string        `json:"broker"`
	Robots  []robotReport `json:"robots"`
	Dropped int64         `json:"dropped,omitempty"` // messages over the collection buffer's cap
	Fails   int           `json:"fails"`
	Warns   int           `json:"warns"`
}

// robotSeen is what the collection window saw of one robot.
type robotSeen struct {
	status, metrics *protocol.Event // latest valid of each
	valid           int             // valid payloads seen
	invalid         []string        // "topic: error", at most doctorMaxInvalid
	invalidMore     int             // invalid payloads beyond the cap
}

func defineDoctor(fs *flag.FlagSet) runFunc {
	mc := addMQTTFlags(fs)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the ping reply; also caps --wait")
	wait := fs.Duration("wait", 5*time.Second, "the longest to collect retained messages")
	quiet := fs.Duration("quiet", 500*time.Millisecond, "stop collecting after this long without a retained message")
	stale := fs.Duration("stale", 30*time.Second, "warn when the latest metrics are older than this")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		return runDoctor(ctx, mc, pos, doctorOpts{timeout: *timeout, wait: *wait, quiet: *quiet, stale: *stale, json: *asJSON}, stdout, stderr)
	}
}

type doctorOpts struct {
	timeout, wait, quiet, stale time.Duration
	json                        bool
}

func runDoctor(ctx context.Context, mc *mqttConfig, pos []string, o doctorOpts, stdout, stderr io.Writer) error {
	if len(pos) > 1 {
		return fmt.Errorf("%w: at most one ROBOT, got %q", errUsage, pos)
	}
	for name, d := range map[string]time.Duration{"--timeout": o.timeout, "--wait": o.wait, "--quiet": o.quiet, "--stale": o.stale} {
		if d <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %s", errUsage, name, d)
		}
	}
	o.wait = min(o.wait, o.timeout) // --timeout bounds every wait
	if err := mc.load(stderr); err != nil {
		return err
	}
	topics := mc.Topics
	robot := "+"
	if len(pos) == 1 {
		robot = pos[0]
		if err := protocol.CheckID("robot id", robot); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}

	client, err := mc.connect(ctx, "doctor", false, nil, nil)
	if err != nil {
		return err
	}
	defer client.Disconnect(250)

	seen, dropped, err := collectStatusMetrics(ctx, client, mc, robot, o.wait, o.quiet)
	if err != nil {
		return err
	}
	if len(seen) == 0 {
		what := "any robot"
		if robot != "+" {
			what = robot
		}
		fmt.Fprintf(stderr, "fleetctl doctor: no retained status or metrics of %s on %s under prefix %q\n", what, mc.broker(), topics.Prefix())
		return fmt.Errorf("%w on %s", errNoRobots, mc.broker())
	}

	now := time.Now()
	rep := doctorReport{Broker: mc.broker(), Dropped: dropped}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := seen[id]
		rr := robotReport{Robot: id, Checks: robotChecks(s, now, o.stale)}
		if robot != "+" && s.status != nil && s.status.Data.(protocol.RobotStatus).State == "online" {
			rr.Checks = append(rr.Checks, pingCheck(ctx, client, mc, id, o.timeout))
		}
		for _, c := range rr.Checks {
			switch c.Level {
			case levelFail:
				rep.Fails++
			case levelWarn:
				rep.Warns++
			}
		}
		rep.Robots = append(rep.Robots, rr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if o.json {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		printReport(stdout, &rep)
	}
	if rep.Fails > 0 {
		return fmt.Errorf("%w: %d FAIL, %d WARN", errChecksFailed, rep.Fails, rep.Warns)
	}
	return nil
}

// collectStatusMetrics gathers the retained status and metrics of robot
// ("+" for all) as collectRetained does; for a single robot it stops as
// soon as both topics have spoken.
func collectStatusMetrics(ctx context.Context, client mqtt.Client, mc *mqttConfig, robot string, wait, quiet time.Duration) (map[string]*robotSeen, int64, error) {
	topics := mc.Topics
	seen := map[string]*robotSeen{}
	filters := map[string]byte{
		topics.Status(robot):  protocol.KindStatus.QoS(),
		topics.Metrics(robot): protocol.KindMetrics.QoS(),
	}
	dropped, err := collectRetained(ctx, client, mc, filters, wait, quiet, func(m mqtt.Message) bool {
		id := robotOf(topics, m.Topic())
		s := seen[id]
		if s == nil {
			s = &robotSeen{}
			seen[id] = s
		}
		s.observe(topics, m.Topic(), m.Payload())
		return robot != "+" && s.status != nil && s.metrics != nil
	})
	return seen, dropped, err
}

// collectRetained subscribes to filters and hands what arrives to take,
// retained messages first, until take says it has enough, wait has passed
// since the subscription's acknowledgement, or (with quiet > 0) no retained
// message has come for quiet: the broker sends the retained ones right
// after the SUBACK, so a pause means they are all in, however large the
// fleet. Live messages are taken but do not hold the window open. Empty
// payloads (retained messages being cleared) are skipped. It returns how
// many messages overflowed the buffer.
func collectRetained(ctx context.Context, client mqtt.Client, mc *mqttConfig, filters map[string]byte, wait, quiet time.Duration, take func(mqtt.Message) (enough bool)) (int64, error) {
	q := newMsgQueue(watchQueueBytes)
	tok := client.SubscribeMultiple(filters, func(_ mqtt.Client, m mqtt.Message) { q.push(m) })
	if err := mqttkit.Wait(ctx, tok, mc.ConnectTimeout); err != nil {
		names := make([]string, 0, len(filters))
		for f := range filters {
			names = append(names, f)
		}
		sort.Strings(names)
		return 0, fmt.Errorf("subscribe %s: %w", strings.Join(names, ", "), err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var lull <-chan time.Time
	var lullTimer *time.Timer
	if quiet > 0 {
		lullTimer = time.NewTimer(quiet)
		defer lullTimer.Stop()
		lull = lullTimer.C
	}
	for {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline.C:
			return q.dropped.Load(), nil
		case <-lull:
			return q.dropped.Load(), nil
		case m := <-q.ch:
			q.done(m)
			if lullTimer != nil && m.Retained() {
				lullTimer.Reset(quiet)
			}
			if len(m.Payload()) == 0 {
				continue
			}
			if take(m) {
				return q.dropped.Load(), nil
			}
		}
	}
}

// robotOf returns the robot id of a topic under topics' prefix.
func robotOf(topics protocol.Topics, topic string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(topic, topics.Prefix()+"/v1/robots/"), "/")
	return id
}

// observe records one payload on topic: the latest valid event of its
// kind, or the reason it is invalid.
func (s *robotSeen) observe(topics protocol.Topics, topic string, payload []byte) {
	ev, err := protocol.Decode(payload)
	if err == nil {
		var tp protocol.Topic
		if tp, err = topics.Parse(topic); err == nil {
			err = tp.Matches(ev)
		}
	}
	if err != nil {
		if len(s.invalid) < doctorMaxInvalid {
			s.invalid = append(s.invalid, topic+": "+err.Error())
		} else {
			s.invalidMore++
		}
		return
	}
	s.valid++
	switch ev.Data.(type) {
	case protocol.RobotStatus:
		s.status = ev
	case protocol.RobotMetrics:
		s.metrics = ev
	}
}

// robotChecks judges what was seen of one robot at now.
func robotChecks(s *robotSeen, now time.Time, stale time.Duration) []doctorCheck {
	var cs []doctorCheck
	add := func(name, level, format string, a ...any) {
		cs = append(cs, doctorCheck{Name: name, Level: level, Detail: fmt.Sprintf(format, a...)})
	}

	if s.status == nil {
		add("status", levelFail, "no valid retained status")
	} else {
		d := s.status.Data.(protocol.RobotStatus)
		switch {
		case d.State == "online":
			host := ""
			if d.Hostname != "" {
				host = fmt.Sprintf(" on %q", d.Hostname)
			}
			add("status", levelOK, "online since %s (up %s), agent %s%s", d.StartedAt, roundAge(now.Sub(d.StartedAt.Time)), d.AgentVersion, host)
		case d.Reason == "shutdown":
			add("status", levelWarn, "offline (shutdown) at %s, agent %s started %s", s.status.TS, d.AgentVersion, d.StartedAt)
		default:
			reason := d.Reason
			if reason == "" {
				reason = "no reason given"
			}
			add("status", levelFail, "offline (%s) at %s, %s ago; agent %s started %s", reason, s.status.TS, roundAge(now.Sub(s.status.TS.Time)), d.AgentVersion, d.StartedAt)
		}
	}

	if s.metrics == nil {
		add("metrics", levelWarn, "no valid retained metrics")
	} else {
		age := now.Sub(s.metrics.TS.Time)
		switch {
		case age < -doctorClockSkew:
			add("metrics", levelWarn, "latest at %s is %s in the future: the robot's clock is off", s.metrics.TS, roundAge(-age))
		case age > stale:
			add("metrics", levelWarn, "stale: latest at %s, %s ago (over %s)", s.metrics.TS, roundAge(age), stale)
		default:
			add("metrics", levelOK, "latest at %s, %s ago", s.metrics.TS, roundAge(max(age, 0)))
		}
		a := s.metrics.Data.(protocol.RobotMetrics).Agent
		level := levelOK
		if a.SpoolDropped > 0 || a.SpoolDepth > doctorSpoolDeep {
			level = levelWarn
		}
		add("spool", level, "depth %d (%d bytes), dropped %d since start", a.SpoolDepth, a.SpoolBytes, a.SpoolDropped)
	}

	if len(s.invalid) == 0 {
		add("payloads", levelOK, "%d valid", s.valid)
	}
	for _, e := range s.invalid {
		add("payloads", levelFail, "invalid: %s", e)
	}
	if s.invalidMore > 0 {
		add("payloads", levelFail, "%d more invalid payloads", s.invalidMore)
	}
	return cs
}

// pingCheck sends ping to robot and times the matching reply.
func pingCheck(ctx context.Context, client mqtt.Client, mc *mqttConfig, robot string, timeout time.Duration) doctorCheck {
	fail := func(format string, a ...any) doctorCheck {
		return doctorCheck{Name: "ping", Level: levelFail, Detail: fmt.Sprintf(format, a...)}
	}
	res, err := call(ctx, client, mc, robot, protocol.CmdPing, nil, callOpts{Timeout: timeout, Expires: timeout})
	switch {
	case errors.Is(err, errNoReply):
		return fail("no reply to ping within %s", timeout)
	case res != nil && err != nil:
		rtt := res.RTT.Round(time.Microsecond)
		if res.Data.Error == nil {
			return fail("refused after %s", rtt)
		}
		return fail("refused after %s: %s: %q", rtt, res.Data.Error.Code, res.Data.Error.Message)
	case err != nil:
		if ctx.Err() != nil {
			return fail("interrupted")
		}
		return fail("%v", err)
	}
	detail := fmt.Sprintf("reply in %s", res.RTT.Round(time.Microsecond))
	var pr protocol.PingResult
	if resultAs(res, &pr) == nil && pr.AgentVersion != "" {
		detail += fmt.Sprintf(", agent %s, uptime %.0fs", pr.AgentVersion, pr.UptimeS)
	}
	return doctorCheck{Name: "ping", Level: levelOK, Detail: detail}
}

// roundAge rounds d for people: whole seconds, or milliseconds under one.
func roundAge(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func printReport(w io.Writer, rep *doctorReport) {
	for _, r := range rep.Robots {
		fmt.Fprintf(w, "robot %s\n", clean(r.Robot))
		for _, c := range r.Checks {
			fmt.Fprintf(w, "  %-4s  %-8s  %s\n", c.Level, c.Name, clean(c.Detail))
		}
	}
	if rep.Dropped > 0 {
		fmt.Fprintf(w, "WARN: dropped %d messages over the collection buffer's cap; the report may miss robots\n", rep.Dropped)
	}
	fmt.Fprintf(w, "%d robots, %d FAIL, %d WARN on %s\n", len(rep.Robots), rep.Fails, rep.Warns, rep.Broker)
}
