// Package session is robot-agent's local optimization session manager: it
// queues sessions started by commands, runs them through a runner (an exec
// pipeline in its own process group, or the built-in ONNX quantizer),
// reports every state change as session.* events through a durable emitter,
// and keeps a journal on disk so that a crash of the agent is reported, not
// forgotten, and leaves no child processes behind.
package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Emitter is where the manager sends its events: the agent's durable spool.
type Emitter interface {
	// Emit assigns ev.Seq and stores the event durably (nil = it survives
	// kill -9); the uplink sends it at QoS 1 in order, retained iff the
	// topic kind is retained.
	Emit(ev *protocol.Event) error
	// ClearRetained durably queues an empty retained publish on topic.
	ClearRetained(topic string) error
}

// Timing of the manager.
const (
	// progressInterval is the least time between two session.progress
	// events of one session (spec: at most 4 per second).
	progressInterval = 250 * time.Millisecond
	// journalProgressEvery is the least time between two journal writes of
	// a session's progress (a stage change is written at once), so that an
	// agent killed mid-session reports where the session was.
	journalProgressEvery = time.Second
	// cancelWait is how long Cancel waits for a running session to stop
	// before answering "cancelling".
	cancelWait = time.Second
	// outputCheckEvery is how often a running session's output directory
	// is measured against MaxOutputBytes.
	outputCheckEvery = 2 * time.Second
	// warnEvery rate-limits repeated warnings (emit failures).
	warnEvery = 30 * time.Second
)

// Who cancelled, when it was the agent itself.
const (
	ByAgent          = "agent"
	reasonShutdown   = "agent shutting down"
	msgAfterRestart  = "waiting for the agent to restart"
	statusCancelling = "cancelling" // cancel_session answer while the runner stops
)

// Causes of a running session's context ending.
var (
	errTimeout     = errors.New("pipeline timeout")
	errOutputLimit = errors.New("output directory over sessions.max_output_bytes")
)

// cancelCause is the cause of a cancel by command or by shutdown.
type cancelCause struct{ reason, by string }

func (c *cancelCause) Error() string { return "cancelled by " + c.by + ": " + c.reason }

// Manager runs the sessions of one robot.
type Manager struct {
	cfg       Config
	robotID   string
	stateDir  string
	topics    protocol.Topics
	out       Emitter
	log       *slog.Logger
	pipelines map[string]*Pipeline
	journal   *journal
	wake      chan struct{} // capacity 1: the queue may have work

	// mu guards every field below and every *sess field. A session's events
	// are emitted while holding it, so they reach the spool in order.
	mu         sync.Mutex
	sessions   map[string]*sess // every session the journal holds
	byCommand  map[string]*sess // start_session command id -> its session
	queue      []*sess          // queued sessions, next first
	running    int
	stale      []*sess // running when the agent last died; Run reports them
	reloaded   []*sess // queued when the agent last stopped; Run re-announces them
	runStarted bool
	closed     bool
	lastWarn   time.Time
	muted      int // warnings suppressed since lastWarn
}

// sess is one session in memory: its journal record plus run state.
type sess struct {
	rec      *record
	pipeline *Pipeline
	cancel   context.CancelCauseFunc // non-nil while running
	ctx      context.Context         // the run's context (cancel, timeout)
	stopCtx  context.CancelFunc      // releases ctx's timer
	done     chan struct{}           // closed when a run ends
	started  time.Time               // monotonic start of the run
	// progress throttle
	lastProgress time.Time
	pending      *protocol.SessionProgress
	timer        *time.Timer
	lastJournal  time.Time // last journal write of the progress
	journalStage string    // the stage written then
	ended        bool      // no more progress may be emitted
}

// New returns a manager for robotID keeping its journal and session work
// directories under stateDir. cfg is completed with FillDefaults and
// validated. It opens the journal (so commands can be answered at once);
// Run recovers what a previous run left.
func New(cfg Config, robotID, stateDir string, topics protocol.Topics, out Emitter, log *slog.Logger) (*Manager, error) {
	cfg.FillDefaults(stateDir)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("session config: %w", err)
	}
	if err := protocol.CheckID("robot id", robotID); err != nil {
		return nil, fmt.Errorf("session manager: %w", err)
	}
	if out == nil {
		return nil, errors.New("session manager: nil Emitter")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		cfg: cfg, robotID: robotID, stateDir: stateDir, topics: topics, out: out,
		log:       log.With("component", "sessions"),
		pipelines: map[string]*Pipeline{},
		wake:      make(chan struct{}, 1),
		sessions:  map[string]*sess{},
		byCommand: map[string]*sess{},
	}
	for i := range m.cfg.Pipelines {
		p := &m.cfg.Pipelines[i]
		m.pipelines[p.Name] = p
		if p.Runner == RunnerExec && !placeholder.MatchString(p.Command[0]) {
			if _, err := exec.LookPath(p.Command[0]); err != nil {
				// Not an error: the toolchain may be installed later.
				m.log.Warn("pipeline program not found; its sessions will fail with runner_error", "pipeline", p.Name, "program", p.Command[0], "err", err)
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(stateDir, "sessions"), 0o750); err != nil {
		return nil, fmt.Errorf("session manager: %w", err)
	}
	j, err := openJournal(filepath.Join(stateDir, "sessions.db"))
	if err != nil {
		return nil, err
	}
	recs, bad, err := j.load()
	if err != nil {
		j.close()
		return nil, err
	}
	if len(bad) > 0 {
		m.log.Warn("dropping undecodable journal records", "ids", bad)
		_ = j.remove(bad...)
	}
	m.journal = j
	for _, r := range recs {
		s := &sess{rec: r, pipeline: m.pipelines[r.Pipeline], done: make(chan struct{})}
		m.sessions[r.ID] = s
		if r.CommandID != "" {
			m.byCommand[r.CommandID] = s
		}
		switch r.Status {
		case protocol.StatusQueued:
			m.queue = append(m.queue, s)
			m.reloaded = append(m.reloaded, s)
		case protocol.StatusRunning:
			m.stale = append(m.stale, s)
		default:
			close(s.done)
		}
	}
	return m, nil
}

// Run recovers the journal, runs the queue until ctx is done, then stops the
// running sessions (reported cancelled) and returns. Queued sessions stay in
// the journal and run after the next start.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.runStarted {
		m.mu.Unlock()
		return errors.New("session manager: Run called twice")
	}
	m.runStarted = true
	m.recoverLocked()
	m.mu.Unlock()

	runCtx, stopAll := context.WithCancelCause(context.Background())
	defer stopAll(nil)
	var wg sync.WaitGroup
	for {
		m.mu.Lock()
		for m.running < m.cfg.MaxConcurrent && len(m.queue) > 0 {
			s := m.queue[0]
			m.queue = m.queue[1:]
			if job := m.startLocked(runCtx, s); job != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m.runSession(s, job)
				}()
			}
		}
		m.mu.Unlock()
		select {
		case <-m.wake:
			continue
		case <-ctx.Done():
		}
		break
	}

	m.mu.Lock()
	for _, s := range m.sessions {
		if s.cancel != nil {
			s.cancel(&cancelCause{reason: reasonShutdown, by: ByAgent})
		}
	}
	m.mu.Unlock()
	wg.Wait()

	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.queue {
		s.rec.Message = msgAfterRestart
		m.emitStateLocked(s)
	}
	m.closed = true
	if err := m.journal.close(); err != nil {
		return fmt.Errorf("session manager: close journal: %w", err)
	}
	return nil
}

// recoverLocked reports the sessions that were running when the agent died
// as failed (agent_restarted), after killing what is left of their
// processes, and re-announces the queued ones.
func (m *Manager) recoverLocked() {
	for _, s := range m.stale {
		r := s.rec
		if r.PGID > 0 {
			if n := killLeftovers(r.PGID, r.PStart); n > 0 {
				m.log.Warn("killed leftover processes of a session interrupted by an agent restart", "session", r.ID, "pgid", r.PGID, "processes", n)
			}
		}
		r.PGID, r.PStart = 0, 0
		// Report where the session was, as the journal last knew it: the
		// session.state keeps its percent and stage.
		msg, detail := "the agent stopped while the session was running", ""
		if r.Percent > 0 || r.Stage != "" {
			msg += fmt.Sprintf(" (at %.4g%%", r.Percent)
			if r.Stage != "" {
				msg += ", stage " + strconv.Quote(r.Stage)
			}
			msg += ")"
			if r.Message != "" {
				detail = "last progress message: " + r.Message
			}
		}
		m.finishLocked(s, protocol.StatusFailed, &protocol.ErrorInfo{
			Code: protocol.FailAgentRestarted, Message: msg, Detail: detail,
		}, nil, nil, "", "")
	}
	m.stale = nil
	for _, s := range m.reloaded {
		s.rec.Message = ""
		m.emitStateLocked(s)
	}
	m.reloaded = nil
	m.retainLocked()
}

// Pipelines returns the names of the configured pipelines.
func (m *Manager) Pipelines() []string {
	names := make([]string, len(m.cfg.Pipelines))
	for i, p := range m.cfg.Pipelines {
		names[i] = p.Name
	}
	return names
}

// Models returns the model files visible in the model directories,
// relative to their directory, sorted (at most 500).
func (m *Manager) Models() []string { return listModels(m.cfg.ModelDirs) }

// StartRequest is a start_session command's arguments.
type StartRequest struct {
	CommandID string // for idempotency: a later request with the same id gets the first one's answer
	SessionID string // optional; a ULID when empty
	Pipeline  string
	Model     string
	Params    map[string]any
}

// StartedBy returns the answer a start_session command with this id got, if
// the journal still holds its session (the id survives agent restarts).
func (m *Manager) StartedBy(commandID string) (protocol.StartSessionResult, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.byCommand[commandID]
	if s == nil || commandID == "" {
		return protocol.StartSessionResult{}, false
	}
	return protocol.StartSessionResult{SessionID: s.rec.ID, Status: s.rec.ReplyStatus}, true
}

// Start queues a session and returns its id and status ("queued"). A
// request whose CommandID was seen before returns the first answer and
// starts nothing. Errors wrap ErrUnknownPipeline, ErrInvalidModel,
// ErrInvalidParams, ErrInvalidRequest, ErrBusy, ErrClosed or ErrJournal.
func (m *Manager) Start(req StartRequest) (protocol.StartSessionResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.CommandID != "" {
		if s := m.byCommand[req.CommandID]; s != nil {
			return protocol.StartSessionResult{SessionID: s.rec.ID, Status: s.rec.ReplyStatus}, nil
		}
	}
	if m.closed {
		return protocol.StartSessionResult{}, ErrClosed
	}
	p := m.pipelines[req.Pipeline]
	if p == nil {
		return protocol.StartSessionResult{}, fmt.Errorf("%w %q (configured: %v)", ErrUnknownPipeline, req.Pipeline, m.Pipelines())
	}
	if _, err := resolveModel(m.cfg.ModelDirs, req.Model); err != nil {
		return protocol.StartSessionResult{}, err
	}
	params, err := checkParams(p, req.Params)
	if err != nil {
		return protocol.StartSessionResult{}, err
	}
	id := req.SessionID
	if id == "" {
		id = protocol.NewID()
	} else if err := protocol.CheckID("session_id", id); err != nil {
		return protocol.StartSessionResult{}, fmt.Errorf("%w: %w", ErrInvalidRequest, err)
	}
	if m.sessions[id] != nil {
		return protocol.StartSessionResult{}, fmt.Errorf("%w: session_id %q is already used", ErrInvalidRequest, id)
	}
	if len(m.queue) >= m.cfg.MaxQueued {
		return protocol.StartSessionResult{}, fmt.Errorf("%w: %d sessions are queued (sessions.max_queued)", ErrBusy, len(m.queue))
	}
	s := &sess{pipeline: p, done: make(chan struct{}), rec: &record{
		ID: id, CommandID: req.CommandID, ReplyStatus: protocol.StatusQueued,
		Pipeline: p.Name, Model: req.Model, Params: params,
		Status: protocol.StatusQueued, CreatedAt: time.Now().UTC(),
	}}
	if err := m.journal.put(s.rec); err != nil {
		return protocol.StartSessionResult{}, fmt.Errorf("start session: %w", err)
	}
	m.sessions[id] = s
	if req.CommandID != "" {
		m.byCommand[req.CommandID] = s
	}
	m.queue = append(m.queue, s)
	m.emitLocked(protocol.NewSessionEvent(m.robotID, id, protocol.SessionQueued{
		Pipeline: p.Name, Model: req.Model, Params: params, Position: len(m.queue) - 1,
	}))
	m.emitStateLocked(s)
	m.log.Info("session queued", "session", id, "pipeline", p.Name, "model", req.Model, "position", len(m.queue)-1)
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return protocol.StartSessionResult{SessionID: id, Status: protocol.StatusQueued}, nil
}

// Cancel cancels a queued or running session. For a running session it
// waits up to a second for the runner to stop and answers "cancelled", or
// "cancelling" while the runner is still stopping (the session.cancelled
// event follows). Errors wrap ErrUnknownSession or ErrSessionFinished.
func (m *Manager) Cancel(sessionID, reason, by string) (protocol.CancelSessionResult, error) {
	m.mu.Lock()
	s := m.sessions[sessionID]
	switch {
	case m.closed:
		m.mu.Unlock()
		return protocol.CancelSessionResult{}, ErrClosed
	case s == nil:
		m.mu.Unlock()
		return protocol.CancelSessionResult{}, fmt.Errorf("%w %q", ErrUnknownSession, sessionID)
	case s.rec.finished():
		st := s.rec.Status
		m.mu.Unlock()
		return protocol.CancelSessionResult{Status: st}, fmt.Errorf("%w: session %q is %s", ErrSessionFinished, sessionID, st)
	case s.rec.Status == protocol.StatusQueued:
		if i := slices.Index(m.queue, s); i >= 0 {
			m.queue = slices.Delete(m.queue, i, i+1)
		}
		m.finishLocked(s, protocol.StatusCancelled, nil, nil, nil, reason, by)
		m.retainLocked()
		m.mu.Unlock()
		return protocol.CancelSessionResult{Status: protocol.StatusCancelled}, nil
	}
	if s.cancel != nil {
		s.cancel(&cancelCause{reason: reason, by: by})
	}
	done := s.done
	m.mu.Unlock()
	select {
	case <-done:
		m.mu.Lock()
		st := s.rec.Status
		m.mu.Unlock()
		return protocol.CancelSessionResult{Status: st}, nil
	case <-time.After(cancelWait):
		return protocol.CancelSessionResult{Status: statusCancelling}, nil
	}
}

// List returns the journal's sessions, oldest first.
func (m *Manager) List() []protocol.SessionSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	all := make([]*sess, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b *sess) int { return int64cmp(int64(a.rec.Order), int64(b.rec.Order)) })
	out := make([]protocol.SessionSummary, len(all))
	for i, s := range all {
		out[i] = protocol.SessionSummary{SessionID: s.rec.ID, SessionState: stateOf(s.rec)}
	}
	return out
}

// startLocked moves s from queued to running and returns its job, or nil
// when it failed before a runner could start.
func (m *Manager) startLocked(runCtx context.Context, s *sess) *Job {
	r := s.rec
	now := time.Now().UTC()
	r.Status, r.StartedAt, r.Message = protocol.StatusRunning, &now, ""
	s.started = time.Now()
	if s.pipeline == nil {
		m.finishLocked(s, protocol.StatusFailed, &protocol.ErrorInfo{Code: protocol.FailInternal,
			Message: fmt.Sprintf("pipeline %q is no longer configured", r.Pipeline)}, nil, nil, "", "")
		return nil
	}
	modelPath, err := resolveModel(m.cfg.ModelDirs, r.Model)
	if err != nil {
		m.finishLocked(s, protocol.StatusFailed, &protocol.ErrorInfo{Code: protocol.FailInvalidModel, Message: err.Error()}, nil, nil, "", "")
		return nil
	}
	dir := filepath.Join(m.stateDir, "sessions", r.ID)
	outDir := filepath.Join(dir, "output")
	var logf *cappedLog
	if err = os.MkdirAll(outDir, 0o750); err == nil {
		logf, err = openLog(filepath.Join(dir, "session.log"), m.cfg.MaxLogBytes)
	}
	if err != nil {
		m.finishLocked(s, protocol.StatusFailed, &protocol.ErrorInfo{Code: protocol.FailInternal, Message: "prepare session directory: " + err.Error()}, nil, nil, "", "")
		return nil
	}
	if err := m.journal.put(r); err != nil {
		m.warnLocked("journal write failed", "session", r.ID, "err", err)
	}
	m.running++
	var ctx context.Context
	ctx, s.cancel = context.WithCancelCause(runCtx)
	s.ctx, s.stopCtx = context.WithTimeoutCause(ctx, s.pipeline.Timeout, errTimeout)
	m.emitLocked(protocol.NewSessionEvent(m.robotID, r.ID, protocol.SessionStarted{
		Pipeline: r.Pipeline, Model: r.Model, Params: r.Params, EstimatedDurationS: m.estimateLocked(r),
	}))
	m.emitStateLocked(s)
	m.log.Info("session started", "session", r.ID, "pipeline", r.Pipeline, "model", r.Model)
	return &Job{
		SessionID: r.ID, Pipeline: s.pipeline, Model: r.Model, ModelPath: modelPath, Params: r.Params,
		Dir: dir, OutputDir: outDir, Log: logf, CancelGrace: m.cfg.CancelGrace,
		Started: func(pgid int) { m.recordGroup(s, pgid) },
	}
}

// estimateLocked returns the mean duration of the last completed sessions of
// the same pipeline and model, or nil when there are none.
func (m *Manager) estimateLocked(r *record) *float64 {
	var sum float64
	n := 0
	for _, o := range m.sessions {
		if o.rec.Status == protocol.StatusCompleted && o.rec.Pipeline == r.Pipeline && o.rec.Model == r.Model &&
			o.rec.StartedAt != nil && o.rec.FinishedAt != nil {
			sum += o.rec.FinishedAt.Sub(*o.rec.StartedAt).Seconds()
			n++
		}
	}
	if n == 0 {
		return nil
	}
	est := sum / float64(n)
	return &est
}

// recordGroup journals the process group of a running exec session, so the
// next start can kill it after a crash.
func (m *Manager) recordGroup(s *sess, pgid int) {
	start, err := procStart(pgid)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.warnLocked("read process start time", "session", s.rec.ID, "pid", pgid, "err", err)
	}
	s.rec.PGID, s.rec.PStart = pgid, start
	if err := m.journal.put(s.rec); err != nil {
		m.warnLocked("journal write failed", "session", s.rec.ID, "err", err)
	}
}

// runSession runs the job's runner and reports how it ended.
func (m *Manager) runSession(s *sess, job *Job) {
	m.mu.Lock()
	ctx, cancel, stop := s.ctx, s.cancel, s.stopCtx
	m.mu.Unlock()
	defer stop()
	defer cancel(nil)
	logf := job.Log.(*cappedLog)
	defer logf.Close()

	// Watch the output directory's size.
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		t := time.NewTicker(outputCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-watchDone:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if dirSize(job.OutputDir) > m.cfg.MaxOutputBytes {
					cancel(errOutputLimit)
					return
				}
			}
		}
	}()

	out, err := runners[s.pipeline.Runner].Run(ctx, job, func(u Update) { m.progress(s, u) })
	// The last progress still waiting for its slot goes out in that slot,
	// before the final event.
	m.mu.Lock()
	wait := time.Duration(0)
	if s.pending != nil {
		wait = progressInterval - time.Since(s.lastProgress)
	}
	m.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	var (
		result *protocol.SessionResult
		einfo  *protocol.ErrorInfo
		status = protocol.StatusCompleted
		reason string
		by     string
	)
	if err == nil {
		var arts []protocol.Artifact
		var omitted int
		var total int64
		arts, omitted, err = artifacts(job.OutputDir)
		for _, a := range arts {
			total += a.Bytes
		}
		switch {
		case err != nil:
			err = &RunError{Code: protocol.FailInternal, Message: err.Error()}
		case total > m.cfg.MaxOutputBytes:
			err = &RunError{Code: protocol.FailRunnerError, Message: errOutputLimit.Error(), ExitCode: out.ExitCode}
		default:
			metrics := out.Metrics
			if omitted > 0 {
				if metrics == nil {
					metrics = map[string]float64{}
				}
				metrics["artifacts_omitted"] = float64(omitted)
			}
			result = &protocol.SessionResult{Artifacts: arts, Metrics: metrics}
		}
	}
	if err != nil {
		status = protocol.StatusFailed
		re := asRunError(err)
		if re == nil {
			re = &RunError{Code: protocol.FailInternal, Message: err.Error()}
		}
		cause := context.Cause(ctx)
		var cc *cancelCause
		switch {
		case errors.As(cause, &cc):
			status, reason, by = protocol.StatusCancelled, cc.reason, cc.by
		case errors.Is(cause, errTimeout):
			einfo = &protocol.ErrorInfo{Code: protocol.FailTimeout,
				Message: fmt.Sprintf("the run took longer than the pipeline's timeout %s", s.pipeline.Timeout), Detail: re.Detail}
		case errors.Is(cause, errOutputLimit):
			einfo = &protocol.ErrorInfo{Code: protocol.FailRunnerError,
				Message: fmt.Sprintf("%v (%d bytes)", errOutputLimit, m.cfg.MaxOutputBytes), Detail: re.Detail}
		default:
			code := re.Code
			if code == "" {
				code = protocol.FailInternal
			}
			einfo = &protocol.ErrorInfo{Code: code, Message: clip(re.Message, 1024), Detail: re.Detail}
		}
		out.ExitCode = re.ExitCode
	}
	fmt.Fprintf(logf, "session %s: %s\n", status, errText(einfo))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finishLocked(s, status, einfo, result, out.ExitCode, reason, by)
	m.running--
	m.retainLocked()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func errText(e *protocol.ErrorInfo) string {
	if e == nil {
		return "ok"
	}
	return e.Code + ": " + e.Message
}

// progress takes a runner's update and emits it, at most one per
// progressInterval per session; the latest update is always sent, at the
// latest before the session's final event.
func (m *Manager) progress(s *sess, u Update) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.ended {
		return
	}
	elapsed := time.Since(s.started).Seconds()
	eta := u.EtaS
	if eta == nil && u.Percent > 0 && u.Percent < 100 && elapsed > 0 {
		e := elapsed * (100 - u.Percent) / u.Percent
		eta = &e
	} else if eta == nil && u.Percent >= 100 {
		zero := 0.0
		eta = &zero
	}
	r := s.rec
	r.Percent, r.Stage, r.Message, r.EtaS = u.Percent, u.Stage, u.Message, eta
	s.pending = &protocol.SessionProgress{Percent: u.Percent, Stage: u.Stage, Message: u.Message, ElapsedS: elapsed, EtaS: eta}
	if wait := progressInterval - time.Since(s.lastProgress); wait > 0 {
		if s.timer == nil {
			s.timer = time.AfterFunc(wait, func() {
				m.mu.Lock()
				defer m.mu.Unlock()
				s.timer = nil
				m.flushProgressLocked(s)
			})
		}
		return
	}
	m.flushProgressLocked(s)
}

func (m *Manager) flushProgressLocked(s *sess) {
	if s.pending == nil || s.ended {
		return
	}
	// Journal before publishing: a progress the fleet saw is one a restart
	// after kill -9 can report.
	if r := s.rec; time.Since(s.lastJournal) >= journalProgressEvery || r.Stage != s.journalStage {
		if err := m.journal.put(r); err != nil {
			m.warnLocked("journal write failed", "session", r.ID, "err", err)
		}
		s.lastJournal, s.journalStage = time.Now(), r.Stage
	}
	m.emitLocked(protocol.NewSessionEvent(m.robotID, s.rec.ID, *s.pending))
	m.emitStateLocked(s)
	s.pending = nil
	s.lastProgress = time.Now()
}

// finishLocked moves s to a final status: journal, final events, cleanup.
func (m *Manager) finishLocked(s *sess, status string, einfo *protocol.ErrorInfo, result *protocol.SessionResult, exitCode *int, reason, by string) {
	r := s.rec
	// The last progress goes out before the final event.
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	m.flushProgressLocked(s)
	s.ended = true
	now := time.Now().UTC()
	dur := 0.0
	if r.StartedAt != nil {
		dur = now.Sub(*r.StartedAt).Seconds()
	}
	r.Status, r.FinishedAt, r.Error, r.Result, r.EtaS = status, &now, einfo, result, nil
	r.PGID, r.PStart = 0, 0
	switch status {
	case protocol.StatusCompleted:
		r.Percent, r.Message = 100, ""
	case protocol.StatusCancelled:
		r.Message = "cancelled by " + by
		if reason != "" {
			r.Message += ": " + reason
		}
	case protocol.StatusFailed:
		r.Message = einfo.Message
	}
	if err := m.journal.put(r); err != nil {
		m.warnLocked("journal write failed", "session", r.ID, "err", err)
	}
	var ev protocol.Data
	switch status {
	case protocol.StatusCompleted:
		ev = protocol.SessionCompleted{DurationS: dur, Result: *result}
	case protocol.StatusFailed:
		ev = protocol.SessionFailed{DurationS: dur, Error: *einfo, ExitCode: exitCode}
	case protocol.StatusCancelled:
		ev = protocol.SessionCancelled{DurationS: dur, Reason: reason, By: by}
	}
	m.emitLocked(protocol.NewSessionEvent(m.robotID, r.ID, ev))
	m.emitStateLocked(s)
	s.cancel = nil
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	m.log.Info("session finished", "session", r.ID, "status", status, "error", errText(einfo), "duration_s", dur)
}

// retainLocked drops the oldest finished sessions beyond cfg.Retain (journal
// record, work directory, retained session.state) and the outputs of
// sessions beyond their pipeline's KeepOutputs.
func (m *Manager) retainLocked() {
	var fin []*sess
	for _, s := range m.sessions {
		if s.rec.finished() {
			fin = append(fin, s)
		}
	}
	slices.SortFunc(fin, func(a, b *sess) int { return int64cmp(int64(b.rec.Order), int64(a.rec.Order)) }) // newest first
	var drop []string
	kept := map[string]int{}
	for i, s := range fin {
		r := s.rec
		dir := filepath.Join(m.stateDir, "sessions", r.ID)
		if i >= m.cfg.Retain {
			drop = append(drop, r.ID)
			continue
		}
		kept[r.Pipeline]++
		if p := m.pipelines[r.Pipeline]; p != nil && p.KeepOutputs > 0 && kept[r.Pipeline] > p.KeepOutputs {
			_ = os.RemoveAll(filepath.Join(dir, "output"))
		}
	}
	if len(drop) == 0 {
		return
	}
	if err := m.journal.remove(drop...); err != nil {
		m.warnLocked("journal remove failed", "err", err)
		return
	}
	for _, id := range drop {
		s := m.sessions[id]
		delete(m.sessions, id)
		if s.rec.CommandID != "" {
			delete(m.byCommand, s.rec.CommandID)
		}
		if err := os.RemoveAll(filepath.Join(m.stateDir, "sessions", id)); err != nil {
			m.warnLocked("remove session directory", "session", id, "err", err)
		}
		if err := m.out.ClearRetained(m.topics.SessionState(m.robotID, id)); err != nil {
			m.warnLocked("clear retained session state", "session", id, "err", err)
		}
	}
}

func (m *Manager) emitStateLocked(s *sess) {
	m.emitLocked(protocol.NewSessionEvent(m.robotID, s.rec.ID, stateOf(s.rec)))
}

func (m *Manager) emitLocked(ev *protocol.Event) {
	if err := m.out.Emit(ev); err != nil {
		m.warnLocked("emit event failed", "type", ev.Type, "session", ev.Session, "err", err)
	}
}

// warnLocked logs a warning, at most one per warnEvery; the rest are counted
// and their number logged with the next one.
func (m *Manager) warnLocked(msg string, args ...any) {
	if time.Since(m.lastWarn) < warnEvery {
		m.muted++
		return
	}
	if m.muted > 0 {
		args = append(args, "suppressed", m.muted)
	}
	m.lastWarn, m.muted = time.Now(), 0
	m.log.Warn(msg, args...)
}

// stateOf returns the session.state data of r.
func stateOf(r *record) protocol.SessionState {
	st := protocol.SessionState{
		Status: r.Status, Pipeline: r.Pipeline, Model: r.Model, Params: r.Params,
		Percent: r.Percent, Stage: r.Stage, Message: r.Message,
		CreatedAt: protocol.T(r.CreatedAt), EtaS: r.EtaS, Result: r.Result, Error: r.Error,
	}
	if r.StartedAt != nil {
		st.StartedAt = protocol.TimePtr(*r.StartedAt)
	}
	if r.FinishedAt != nil {
		st.FinishedAt = protocol.TimePtr(*r.FinishedAt)
	}
	return st
}
