// Package agent is the robot-agent daemon: it wires the config, the
// durable spool, the MQTT uplink, the metrics sampler and alert rules, the
// session manager and the command dispatcher, and runs them until its
// context is cancelled.
//
// Flows: metrics are sampled every interval and published directly (QoS 0,
// retained, latest only); alerts, notifications, command replies and
// session events go through the spool (QoS 1, in seq order, deleted after
// PUBACK); commands arrive in a paho callback and are handed to a bounded
// queue that one goroutine drains through the dispatcher.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robotfleet/fleetlink/agent/alerts"
	"github.com/robotfleet/fleetlink/agent/command"
	"github.com/robotfleet/fleetlink/agent/config"
	"github.com/robotfleet/fleetlink/agent/metrics"
	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/agent/uplink"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/internal/version"
	"github.com/robotfleet/fleetlink/protocol"
)

// cmdQueueBytes caps the payload bytes of queued commands (a command is
// at most 256 KiB; anything larger is dropped here, counted).
const cmdQueueBytes = 1 << 20

// ErrStateDir: the state directory cannot be created or written.
var ErrStateDir = errors.New("state directory not writable")

// Agent is the daemon. Create it with New, run it with Run once.
type Agent struct {
	cfg       config.Config
	log       *slog.Logger
	topics    protocol.Topics
	robot     string
	hostname  string
	startedAt protocol.Time

	out      *spool.Outbox
	up       *uplink.Uplink
	col      *metrics.Collector
	eval     *alerts.Evaluator
	mgr      *session.Manager
	disp     *command.Dispatcher
	cmdStore *command.Store

	// catalog is the pipelines and models last published in robot.status
	// (joined), so a change can be re-announced.
	catalog atomic.Value // string

	// epoch is the last connection epoch handed to the uplink; it keeps the
	// numbering going (in memory) when the state dir cannot be written.
	epoch atomic.Int64

	// cmds is the bounded queue between the paho callback and the
	// dispatcher: commands.queue entries and cmdQueueBytes of payload.
	cmds            *mqttkit.Inbox
	cmdWarn         atomic.Int64 // unix seconds of the last drop warning
	retainedIgnored atomic.Int64 // retained messages on the commands topic
	retainedWarn    atomic.Int64 // unix seconds of the last such warning
}

// NewLogger returns the slog logger the config asks for, writing to w.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// New prepares the agent from a validated config: it checks the state
// directory, opens the spool and the session journal. It does not touch
// the network.
func New(cfg config.Config, log *slog.Logger) (*Agent, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := checkStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	topics, err := protocol.NewTopics(cfg.TopicPrefix)
	if err != nil {
		return nil, fmt.Errorf("agent: topic_prefix: %w", err)
	}
	host, _ := os.Hostname()
	a := &Agent{
		cfg: cfg, log: log, topics: topics, robot: cfg.RobotID, hostname: host, startedAt: protocol.Now(),
		eval: alerts.New(cfg.Alerts.Rules),
		cmds: mqttkit.NewInbox(cfg.Commands.Queue, cmdQueueBytes),
	}
	a.out, err = spool.Open(spool.Options{
		Path: filepath.Join(cfg.StateDir, "spool.db"), MaxBytes: int64(cfg.Spool.MaxBytes), Topics: topics, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.mgr, err = session.New(cfg.Sessions, a.robot, cfg.StateDir, topics, a.out, log)
	if err != nil {
		a.out.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.cmdStore, err = command.OpenStore(filepath.Join(cfg.StateDir, "commands.db"), cfg.Commands.Remember)
	if err != nil {
		a.out.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.disp = command.New(a.mgr, command.Options{RobotID: a.robot, AgentVersion: version.Version, StartedAt: a.startedAt.Time,
		MaxAge: cfg.Commands.MaxAge, Store: a.cmdStore, Log: log})
	a.up, err = uplink.New(uplink.Options{
		Brokers: cfg.MQTT.Broker, ClientID: a.robot, Username: cfg.MQTT.Username, Password: cfg.MQTT.Password,
		TLS: uplink.TLS{CAFile: cfg.MQTT.TLS.CAFile, CertFile: cfg.MQTT.TLS.CertFile, KeyFile: cfg.MQTT.TLS.KeyFile,
			ServerName: cfg.MQTT.TLS.ServerName, InsecureSkipVerify: cfg.MQTT.TLS.InsecureSkipVerify},
		KeepAlive: cfg.MQTT.KeepAlive, ConnectTimeout: cfg.MQTT.ConnectTimeout,
		BackoffMin: cfg.MQTT.ReconnectMin, BackoffFastMax: cfg.MQTT.ReconnectFastMax,
		BackoffFastFor: cfg.MQTT.ReconnectFastFor, BackoffMax: cfg.MQTT.ReconnectMax,
		Window: cfg.MQTT.InFlight, ShutdownTimeout: cfg.MQTT.ShutdownTimeout,
		StatusTopic: topics.Status(a.robot),
		NextEpoch:   a.nextEpoch,
		Will:        func(e int64) []byte { return a.status("offline", "lost", e) },
		Online:      func(e int64) []byte { return a.status("online", "", e) },
		Offline:     func(e int64) []byte { return a.status("offline", "shutdown", e) },
		OnConnect:   a.reportDrops,
		Subscriptions: []uplink.Subscription{{
			Topic: topics.Commands(a.robot), QoS: 1, Handler: a.enqueueCommand,
		}},
		Logger: log,
	}, a.out)
	if err != nil {
		a.cmdStore.Close()
		a.out.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.col = metrics.New(context.Background(), metrics.Options{
		Disks: cfg.Metrics.Disks, GPU: cfg.Metrics.GPU, NvidiaSMI: cfg.Metrics.NvidiaSMI, Logger: log,
		Spool: func() (int64, int64, int64) {
			s := a.out.Stats()
			return s.Depth, s.Bytes, s.TotalDropped()
		},
	})
	return a, nil
}

// checkStateDir creates dir and proves it writable, naming the fix when not.
func checkStateDir(dir string) error {
	err := os.MkdirAll(dir, 0o750)
	if err == nil {
		var f *os.File
		if f, err = os.CreateTemp(dir, ".probe-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v (run as root, or set ROBOT_AGENT_STATE_DIR / state_dir to a writable directory)", ErrStateDir, dir, err)
	}
	return nil
}

// nextEpoch numbers a connection attempt (persisted in the spool). When
// the disk fails it still counts up in memory: connecting matters more.
func (a *Agent) nextEpoch() int64 {
	e, err := a.out.NextEpoch()
	if err != nil {
		a.log.Warn("connection epoch not persisted", "err", err, "epoch", a.epoch.Load()+1)
	}
	e = max(e, a.epoch.Load()+1) // never backwards within a run
	a.epoch.Store(e)
	return e
}

// status encodes a robot.status of connection epoch with a fresh seq.
func (a *Agent) status(state, reason string, epoch int64) []byte {
	pipelines, models := nonNil(a.mgr.Pipelines()), nonNil(a.mgr.Models())
	if state == "online" {
		a.catalog.Store(catalogKey(pipelines, models))
	}
	ev := protocol.NewEvent(a.robot, protocol.RobotStatus{
		State: state, Reason: reason, AgentVersion: version.Version, Hostname: a.hostname,
		OS: runtime.GOOS, Arch: runtime.GOARCH, StartedAt: a.startedAt,
		Pipelines: pipelines, Models: models, Epoch: epoch,
	})
	seq, err := a.out.NextSeq()
	if err != nil {
		a.log.Error("status seq", "err", err)
	}
	ev.Seq = seq
	b, err := protocol.Encode(ev)
	if err != nil {
		a.log.Error("encode status", "err", err)
	}
	return b
}

func catalogKey(pipelines, models []string) string {
	return strings.Join(pipelines, "\x00") + "\x01" + strings.Join(models, "\x00")
}

// refreshStatus re-publishes the retained online status when the
// pipelines or models changed since it was last published (a model was
// copied into a model directory).
func (a *Agent) refreshStatus() {
	if !a.up.Connected() {
		return
	}
	key := catalogKey(nonNil(a.mgr.Pipelines()), nonNil(a.mgr.Models()))
	if prev, _ := a.catalog.Load().(string); prev == key {
		return
	}
	_ = a.up.PublishDirect(a.topics.Status(a.robot), 1, true, a.status("online", "", a.up.Stats().Epoch))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// enqueueCommand runs in paho's callback: it never blocks. Retained
// messages are ignored: the relay never retains a command, and a retained
// one (published by mistake or by an attacker) would run again after every
// restart; they get no reply, only a rate-limited warning.
func (a *Agent) enqueueCommand(_ string, payload []byte, retained bool) {
	if retained {
		n := a.retainedIgnored.Add(1)
		now := time.Now().Unix()
		if last := a.retainedWarn.Load(); now-last >= 60 && a.retainedWarn.CompareAndSwap(last, now) {
			a.log.Warn("ignored a retained message on the commands topic (commands are never retained; clear it with an empty retained publish)",
				"topic", a.topics.Commands(a.robot), "ignored_total", n)
		}
		return
	}
	if !a.cmds.Offer(mqttkit.Message{Payload: payload}) {
		now := time.Now().Unix()
		if last := a.cmdWarn.Load(); now-last >= 60 && a.cmdWarn.CompareAndSwap(last, now) {
			entries, bytes := a.cmds.Cap()
			a.log.Warn("command queue full: command dropped", "dropped_total", a.cmds.Dropped(), "payload_bytes", len(payload),
				"queue", entries, "queue_bytes", bytes)
		}
	}
}

// reportDrops publishes one robot.notification warning on connect when the
// spool dropped events since the last report (drop counts and the reported
// mark are persisted in the spool, so drops before a crash are reported too).
func (a *Agent) reportDrops() {
	st := a.out.Stats()
	total := st.TotalDropped()
	if total <= st.DropsReported {
		return
	}
	ev := protocol.NewEvent(a.robot, protocol.RobotNotification{
		Level: "warning", Title: "Spool full: events dropped",
		Message: fmt.Sprintf("%d events dropped (%d progress, %d notifications, %d other; %d in total so far) because the %s outbox was full while the broker was unreachable",
			total-st.DropsReported, st.Dropped[spool.ClassProgress], st.Dropped[spool.ClassNotification], st.Dropped[spool.ClassOther], total, a.cfg.Spool.MaxBytes),
	})
	if err := a.out.Emit(ev); err != nil {
		a.log.Warn("spool drop notification failed", "err", err)
		return
	}
	if err := a.out.MarkDropsReported(total); err != nil {
		a.log.Warn("spool drop notification", "err", err)
	}
}

// Run runs the agent until ctx is cancelled, then shuts down: the session
// manager stops its runs, the uplink sends what is in flight, publishes
// the retained offline status and disconnects, the spool is closed.
// Cancellation is not an error.
func (a *Agent) Run(ctx context.Context) error {
	defer a.out.Close()
	defer a.cmdStore.Close()
	a.log.Info("robot-agent starting", "version", version.String(), "robot_id", a.robot, "broker", a.cfg.MQTT.Broker,
		"state_dir", a.cfg.StateDir, "metrics_interval", a.cfg.Metrics.Interval.String(), "gpu_collectors", a.col.GPUCollectors(),
		"spool_depth", a.out.Stats().Depth)

	// The uplink outlives the workers so their last events still go out.
	upCtx, upCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer upCancel()
	upDone := make(chan error, 1)
	go func() { upDone <- a.up.Run(upCtx) }()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	worker := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(runCtx); err != nil && runCtx.Err() == nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", name, err)
				}
				errMu.Unlock()
				cancel()
			}
		})
	}
	worker("sessions", a.mgr.Run)
	worker("metrics", a.metricsLoop)
	worker("commands", a.commandLoop)
	wg.Wait()
	upCancel()
	if err := <-upDone; err != nil && firstErr == nil {
		firstErr = fmt.Errorf("uplink: %w", err)
	}
	st := a.out.Stats()
	a.log.Info("robot-agent stopped", "spool_depth", st.Depth, "spool_dropped", st.TotalDropped(), "commands_dropped", a.cmds.Dropped(),
		"retained_commands_ignored", a.retainedIgnored.Load())
	return firstErr
}

// metricsLoop samples every interval (±10% jitter so a fleet does not
// publish in lockstep), evaluates the alert rules and publishes.
func (a *Agent) metricsLoop(ctx context.Context) error {
	interval := a.cfg.Metrics.Interval
	next := time.Duration(rand.Int64N(int64(min(interval, time.Second)))) + 100*time.Millisecond
	t := time.NewTimer(next)
	defer t.Stop()
	metricsTopic := a.topics.Metrics(a.robot)
	// Model directories are listed every status_refresh, not each tick.
	lastCatalogCheck := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(time.Duration(float64(interval) * (0.9 + 0.2*rand.Float64())))
		m := a.col.Collect(ctx)
		for _, al := range a.eval.Evaluate(m, time.Now()) {
			ev := protocol.NewEvent(a.robot, al)
			if err := a.out.Emit(ev); err != nil {
				a.log.Error("spool alert", "alert", al.Alert, "err", err)
				continue
			}
			// Logged once stored, so the line means the alert will be delivered.
			a.log.Info("alert", "alert", al.Alert, "state", al.State, "value", al.Value, "threshold", al.Threshold, "seq", ev.Seq)
		}
		if !a.up.Connected() {
			continue // metrics are latest-only: nothing to keep
		}
		if time.Since(lastCatalogCheck) >= a.cfg.Metrics.StatusRefresh {
			lastCatalogCheck = time.Now()
			a.refreshStatus()
		}
		seq, err := a.out.NextSeq()
		if err != nil {
			return err
		}
		ev := protocol.NewEvent(a.robot, *m)
		ev.Seq = seq
		// Plain marshal: protocol.Encode re-parses the payload to validate
		// it, which would triple the allocations of this 1 Hz path. The
		// collector's output is validated by the tests instead.
		b, err := json.Marshal(ev)
		if err != nil {
			a.log.Error("encode metrics", "err", err)
			continue
		}
		_ = a.up.PublishDirect(metricsTopic, 0, true, b) // a drop is counted by the uplink
	}
}

// commandLoop answers queued commands one at a time.
func (a *Agent) commandLoop(ctx context.Context) error {
	for {
		m, err := a.cmds.Recv(ctx)
		if err != nil {
			return nil // ctx done
		}
		reply := a.disp.Handle(ctx, m.Payload)
		if err := a.out.Emit(protocol.NewEvent(a.robot, reply)); err != nil {
			a.log.Error("spool command reply", "command_id", reply.CommandID, "err", err)
		}
	}
}
