package protocol

// Command names the agent understands (spec §4).
const (
	CmdStartSession  = "start_session"
	CmdCancelSession = "cancel_session"
	CmdListSessions  = "list_sessions"
	CmdPing          = "ping"
)

// Error codes of command.reply (spec §4).
const (
	CodeInvalidCommand  = "invalid_command"
	CodeUnknownCommand  = "unknown_command"
	CodeUnknownPipeline = "unknown_pipeline"
	CodeInvalidModel    = "invalid_model"
	CodeInvalidParams   = "invalid_params"
	CodeUnknownSession  = "unknown_session"
	CodeSessionFinished = "session_finished"
	CodeBusy            = "busy"
	CodeExpired         = "expired"
	CodeInternal        = "internal"
)

// StartSessionArgs are the args of start_session.
type StartSessionArgs struct {
	Pipeline  string         `json:"pipeline"`
	Model     string         `json:"model"`
	Params    map[string]any `json:"params,omitempty"`
	SessionID string         `json:"session_id,omitempty"`
}

// StartSessionResult is the result of start_session.
type StartSessionResult struct {
	SessionID string `json:"session_id"`
	Status    string `json:"status"`
}

// CancelSessionArgs are the args of cancel_session.
type CancelSessionArgs struct {
	SessionID string `json:"session_id"`
	Reason    string `json:"reason,omitempty"`
}

// CancelSessionResult is the result of cancel_session.
type CancelSessionResult struct {
	Status string `json:"status"`
}

// SessionSummary is one entry of list_sessions: session.state data plus the id.
type SessionSummary struct {
	SessionID string `json:"session_id"`
	SessionState
}

// ListSessionsResult is the result of list_sessions.
type ListSessionsResult struct {
	Sessions []SessionSummary `json:"sessions"`
}

// PingResult is the result of ping.
type PingResult struct {
	Pong         bool    `json:"pong"`
	AgentVersion string  `json:"agent_version"`
	UptimeS      float64 `json:"uptime_s"`
}
