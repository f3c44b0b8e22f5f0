package session

import (
	"context"
	"errors"
	"io"
	"time"
)

// Runner runs one session of a pipeline. Implementations are registered by
// runner name in runners; a pipeline's Runner field chooses one.
type Runner interface {
	// Run runs job until it finishes or ctx is done, calling report with
	// progress from one goroutine at a time. A failure is a *RunError (or
	// any error, reported as code internal); after ctx is done Run returns
	// ctx's error once everything it started has stopped.
	Run(ctx context.Context, job *Job, report func(Update)) (Outcome, error)
}

// runners maps a pipeline's runner name to its implementation.
var runners = map[string]Runner{
	RunnerExec:         execRunner{},
	RunnerONNXQuantize: onnxRunner{},
}

// Job is what a runner needs to run one session.
type Job struct {
	SessionID string
	Pipeline  *Pipeline
	Model     string         // the command's model name
	ModelPath string         // resolved, absolute, inside a model directory
	Params    map[string]any // checked, defaults filled in
	Dir       string         // the session's working directory
	OutputDir string         // where artifacts go (Dir/output)
	// Log is the session log file (capped); runners write their chatter here.
	Log io.Writer
	// CancelGrace is the time between SIGTERM and SIGKILL.
	CancelGrace time.Duration
	// Started is called with the process group id once a child process
	// runs, so the journal can kill it after a crash of the agent.
	Started func(pgid int)
}

// Update is one progress report of a runner.
type Update struct {
	Percent float64  // 0..100
	Stage   string   // short name of the current step
	Message string   // human-readable detail
	EtaS    *float64 // seconds left when the runner knows; nil = estimate from the rate
}

// Outcome is what a successful run produced besides its files.
type Outcome struct {
	Metrics  map[string]float64
	ExitCode *int
}

// RunError is a failed run, with the session.failed error code.
type RunError struct {
	Code     string // protocol.Fail*
	Message  string
	Detail   string // e.g. the stderr tail
	ExitCode *int
	Err      error // the cause, if any
}

func (e *RunError) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *RunError) Unwrap() error { return e.Err }

// asRunError returns err as a *RunError, or nil.
func asRunError(err error) *RunError {
	var re *RunError
	if errors.As(err, &re) {
		return re
	}
	return nil
}
