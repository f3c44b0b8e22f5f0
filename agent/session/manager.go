// Package session is robot-agent's local optimization session manager: it
// queues sessions started by commands, runs them through a runner (an exec
// pipeline in its own process group, or a built-in optimizer), reports every
// state change as session.* events through a durable emitter, and keeps a
// journal on disk so that a crash of the agent is reported, not forgotten.
package session

import (
	"context"
	"errors"
	"log/slog"

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

// Manager runs the sessions of one robot.
type Manager struct {
	cfg      Config
	robotID  string
	stateDir string
	topics   protocol.Topics
	out      Emitter
	log      *slog.Logger
}

// New returns a manager for robotID keeping its journal and session work
// directories under stateDir. cfg is completed with FillDefaults and
// validated.
func New(cfg Config, robotID, stateDir string, topics protocol.Topics, out Emitter, log *slog.Logger) (*Manager, error) {
	cfg.FillDefaults(stateDir)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, robotID: robotID, stateDir: stateDir, topics: topics, out: out, log: log}, nil
}

// Run recovers the journal, runs the queue until ctx is done, then stops the
// running sessions cleanly.
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
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
// relative to their directory.
func (m *Manager) Models() []string { return nil }

// StartRequest is a start_session command's arguments.
type StartRequest struct {
	CommandID string // for idempotency: a second request with the same id gets the first one's answer
	SessionID string // optional; a ULID when empty
	Pipeline  string
	Model     string
	Params    map[string]any
}

// Start queues a session. A request whose CommandID was seen before returns
// the first answer without starting anything.
func (m *Manager) Start(req StartRequest) (protocol.StartSessionResult, error) {
	return protocol.StartSessionResult{}, errors.ErrUnsupported
}

// Cancel cancels a queued or running session.
func (m *Manager) Cancel(sessionID, reason, by string) (protocol.CancelSessionResult, error) {
	return protocol.CancelSessionResult{}, errors.ErrUnsupported
}

// List returns the journal's sessions, oldest first.
func (m *Manager) List() []protocol.SessionSummary { return nil }
