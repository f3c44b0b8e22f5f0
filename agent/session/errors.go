package session

import "errors"

// Sentinel errors. Manager methods wrap them; the command dispatcher maps
// each to a command.reply error code with errors.Is.
var (
	// ErrUnknownPipeline: no pipeline of that name is configured.
	ErrUnknownPipeline = errors.New("unknown pipeline")
	// ErrInvalidModel: the model name breaks a rule or does not resolve to a
	// file inside a model directory.
	ErrInvalidModel = errors.New("invalid model")
	// ErrInvalidParams: a param is unknown, missing or breaks its rule.
	ErrInvalidParams = errors.New("invalid params")
	// ErrInvalidRequest: the request itself is malformed (e.g. a bad or
	// already used session id).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUnknownSession: no session of that id is in the journal.
	ErrUnknownSession = errors.New("unknown session")
	// ErrSessionFinished: the session already completed, failed or was cancelled.
	ErrSessionFinished = errors.New("session finished")
	// ErrBusy: the queue is full (Config.MaxQueued).
	ErrBusy = errors.New("queue full")
	// ErrClosed: the manager has stopped.
	ErrClosed = errors.New("session manager closed")
	// ErrJournal: the on-disk session journal failed.
	ErrJournal = errors.New("session journal")
)
