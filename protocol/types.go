package protocol

// Event types of spec §4.
const (
	TypeRobotStatus       = "robot.status"
	TypeRobotMetrics      = "robot.metrics"
	TypeRobotAlert        = "robot.alert"
	TypeRobotNotification = "robot.notification"
	TypeSessionQueued     = "session.queued"
	TypeSessionStarted    = "session.started"
	TypeSessionProgress   = "session.progress"
	TypeSessionCompleted  = "session.completed"
	TypeSessionFailed     = "session.failed"
	TypeSessionCancelled  = "session.cancelled"
	TypeSessionState      = "session.state"
	TypeCommand           = "command"
	TypeCommandReply      = "command.reply"
	TypeSystemStatus      = "system.status"
)

// Data is the typed `data` of one event type.
type Data interface {
	// EventType returns the envelope type this data belongs to.
	EventType() string
}

// Rules are struct tags: `v:"required,nullable,nonempty,min=N,max=N,enum=a|b,pattern=NAME,format=date-time"`.
// On a slice or map field, min, max, enum and pattern apply to its elements.
// `doc:"..."` describes the field in the schema and docs.

// RobotStatus is robot.status: retained on the status topic, and the Last Will.
type RobotStatus struct {
	State        string   `json:"state" v:"required,enum=online|offline" doc:"online, or offline (Last Will or clean shutdown)"`
	Reason       string   `json:"reason,omitempty" v:"enum=shutdown|lost" doc:"offline only: shutdown (clean stop) or lost (Last Will)"`
	AgentVersion string   `json:"agent_version" v:"required" doc:"robot-agent version"`
	Hostname     string   `json:"hostname" doc:"the robot's hostname"`
	OS           string   `json:"os" doc:"operating system (GOOS)"`
	Arch         string   `json:"arch" doc:"CPU architecture (GOARCH)"`
	StartedAt    Time     `json:"started_at" v:"required" doc:"when the agent process started"`
	Pipelines    []string `json:"pipelines" doc:"names of the pipelines the agent can run"`
	Models       []string `json:"models" doc:"model files the agent can see, relative to their model directory"`
	// Epoch numbers the agent's MQTT connections (persisted, +1 per attempt):
	// a Will from an older connection must never override a newer status.
	Epoch int64 `json:"epoch,omitempty" v:"min=0" doc:"connection number, persisted by the agent and incremented on every connection attempt; the Last Will and the online status of one connection carry the same epoch. Receivers order a robot's statuses by epoch: one with a lower epoch than the status they hold is stale (a Will of an older connection) and must not replace it. Absent from older agents."`
}

// CPU is robot.metrics data.cpu.
type CPU struct {
	Percent float64   `json:"percent" v:"required,min=0,max=100" doc:"whole-machine CPU use"`
	PerCore []float64 `json:"per_core" v:"required,min=0,max=100" doc:"use of each logical core"`
	Load1   float64   `json:"load1" v:"required,min=0" doc:"1-minute load average"`
	Load5   float64   `json:"load5" v:"required,min=0" doc:"5-minute load average"`
	Load15  float64   `json:"load15" v:"required,min=0" doc:"15-minute load average"`
}

// Memory is robot.metrics data.memory.
type Memory struct {
	Total     int64   `json:"total" v:"required,min=0" doc:"bytes"`
	Used      int64   `json:"used" v:"required,min=0" doc:"bytes"`
	Available int64   `json:"available" v:"required,min=0" doc:"bytes"`
	Percent   float64 `json:"percent" v:"required,min=0,max=100" doc:"used of total"`
}

// Swap is robot.metrics data.swap.
type Swap struct {
	Total   int64   `json:"total" v:"required,min=0" doc:"bytes"`
	Used    int64   `json:"used" v:"required,min=0" doc:"bytes"`
	Percent float64 `json:"percent" v:"required,min=0,max=100" doc:"used of total"`
}

// Disk is one entry of robot.metrics data.disks.
type Disk struct {
	Mount   string  `json:"mount" v:"required" doc:"mount point"`
	Total   int64   `json:"total" v:"required,min=0" doc:"bytes"`
	Used    int64   `json:"used" v:"required,min=0" doc:"bytes"`
	Percent float64 `json:"percent" v:"required,min=0,max=100" doc:"used of total"`
}

// Net is robot.metrics data.net.
type Net struct {
	RxBps float64 `json:"rx_bps" v:"required,min=0" doc:"bytes received per second, all interfaces but loopback"`
	TxBps float64 `json:"tx_bps" v:"required,min=0" doc:"bytes sent per second, all interfaces but loopback"`
}

// Temperature is one entry of robot.metrics data.temperatures.
type Temperature struct {
	Sensor  string  `json:"sensor" v:"required" doc:"hwmon or thermal zone name"`
	Celsius float64 `json:"celsius" v:"required" doc:"°C"`
}

// GPU is one entry of robot.metrics data.gpus.
type GPU struct {
	Index       int     `json:"index" v:"required,min=0" doc:"the GPU's index on the robot"`
	Name        string  `json:"name" v:"required" doc:"model name, e.g. Orin (nvgpu)"`
	UtilPercent float64 `json:"util_percent" v:"required,min=0,max=100" doc:"GPU utilisation"`
	MemUsed     int64   `json:"mem_used" v:"required,min=0" doc:"bytes"`
	MemTotal    int64   `json:"mem_total" v:"required,min=0" doc:"bytes"`
	TempC       float64 `json:"temp_c" doc:"°C"`
	PowerW      float64 `json:"power_w" v:"min=0" doc:"watts"`
}

// AgentStats is robot.metrics data.agent: the agent's own footprint.
type AgentStats struct {
	RSSBytes     int64   `json:"rss_bytes" v:"required,min=0" doc:"the agent's resident memory, bytes"`
	CPUPercent   float64 `json:"cpu_percent" v:"required,min=0" doc:"percent of one core"`
	SpoolDepth   int64   `json:"spool_depth" v:"required,min=0" doc:"events waiting in the durable outbox"`
	SpoolBytes   int64   `json:"spool_bytes,omitempty" v:"min=0" doc:"bytes the outbox holds"`
	SpoolDropped int64   `json:"spool_dropped,omitempty" v:"min=0" doc:"events dropped because the outbox was full, since start"`
}

// RobotMetrics is robot.metrics, retained latest-only at QoS 0.
type RobotMetrics struct {
	CPU          CPU           `json:"cpu" v:"required" doc:"processor use"`
	Memory       Memory        `json:"memory" v:"required" doc:"RAM"`
	Swap         Swap          `json:"swap" v:"required" doc:"swap space; zeros when none"`
	Disks        []Disk        `json:"disks" v:"required" doc:"mounted filesystems, pseudo filesystems left out"`
	Net          Net           `json:"net" v:"required" doc:"network throughput since the previous sample"`
	Temperatures []Temperature `json:"temperatures" v:"required" doc:"sensor readings; empty when the robot exposes none"`
	GPUs         []GPU         `json:"gpus" v:"required" doc:"empty when the robot has none"`
	UptimeS      float64       `json:"uptime_s" v:"required,min=0" doc:"seconds since the robot booted"`
	Agent        AgentStats    `json:"agent" v:"required" doc:"the agent's own footprint"`
}

// RobotAlert is robot.alert: sent once when a rule fires and once when it resolves.
type RobotAlert struct {
	Alert     string  `json:"alert" v:"required,nonempty" doc:"rule name, e.g. cpu_temperature_high"`
	Severity  string  `json:"severity" v:"required,enum=info|warning|critical" doc:"how bad it is"`
	State     string  `json:"state" v:"required,enum=firing|resolved" doc:"firing when the rule trips, resolved when it clears"`
	Message   string  `json:"message" v:"required" doc:"for people"`
	Value     float64 `json:"value" v:"required" doc:"the metric's value when the state changed"`
	Threshold float64 `json:"threshold" v:"required" doc:"the rule's threshold"`
}

// RobotNotification is robot.notification: a human-readable notice.
type RobotNotification struct {
	Level   string `json:"level" v:"required,enum=info|success|warning|error" doc:"how the dashboard shows it"`
	Title   string `json:"title" v:"required" doc:"one line"`
	Message string `json:"message" doc:"details"`
}

// SessionQueued is session.queued.
type SessionQueued struct {
	Pipeline string         `json:"pipeline" v:"required" doc:"name of a pipeline configured on the robot"`
	Model    string         `json:"model" v:"required" doc:"model file name inside the robot's model directories"`
	Params   map[string]any `json:"params" doc:"the params after defaults were applied"`
	Position int            `json:"position" v:"required,min=0" doc:"0 = next to start"`
}

// SessionStarted is session.started.
type SessionStarted struct {
	Pipeline           string         `json:"pipeline" v:"required" doc:"name of a pipeline configured on the robot"`
	Model              string         `json:"model" v:"required" doc:"model file name inside the robot's model directories"`
	Params             map[string]any `json:"params" doc:"the params after defaults were applied"`
	EstimatedDurationS *float64       `json:"estimated_duration_s" v:"min=0" doc:"seconds, null when unknown"`
}

// SessionProgress is session.progress, at most 4 per second per session.
type SessionProgress struct {
	Percent  float64  `json:"percent" v:"required,min=0,max=100" doc:"overall progress"`
	Stage    string   `json:"stage" v:"required" doc:"the pipeline's current stage, e.g. load, quantize, write"`
	Message  string   `json:"message" doc:"detail for people, e.g. layer 12/28"`
	ElapsedS float64  `json:"elapsed_s" v:"required,min=0" doc:"seconds since the session started"`
	EtaS     *float64 `json:"eta_s" v:"min=0" doc:"seconds left, null when unknown"`
}

// Artifact is one output file of a completed session.
type Artifact struct {
	Path   string `json:"path" v:"required,nonempty" doc:"relative to the session's output directory"`
	Bytes  int64  `json:"bytes" v:"required,min=0" doc:"file size"`
	SHA256 string `json:"sha256" v:"required,pattern=sha256" doc:"hex"`
}

// SessionResult is the result of a completed session.
type SessionResult struct {
	Artifacts []Artifact         `json:"artifacts" v:"required" doc:"the files the session produced"`
	Metrics   map[string]float64 `json:"metrics" doc:"free-form numbers, e.g. size_before, size_after, compression_ratio"`
}

// SessionCompleted is session.completed.
type SessionCompleted struct {
	DurationS float64       `json:"duration_s" v:"required,min=0" doc:"seconds from start to finish"`
	Result    SessionResult `json:"result" v:"required" doc:"artifacts and metrics"`
}

// ErrorInfo describes why a session failed.
type ErrorInfo struct {
	Code    string `json:"code" v:"required,nonempty" doc:"runner_error, timeout, agent_restarted, invalid_model, internal, ..."`
	Message string `json:"message" v:"required" doc:"for people"`
	Detail  string `json:"detail,omitempty" doc:"e.g. the last 4 KiB of the runner's stderr"`
}

// Session failure codes of spec §4.
const (
	FailRunnerError    = "runner_error"
	FailTimeout        = "timeout"
	FailAgentRestarted = "agent_restarted"
	FailInvalidModel   = "invalid_model"
	FailInternal       = "internal"
)

// SessionFailed is session.failed.
type SessionFailed struct {
	DurationS float64   `json:"duration_s" v:"required,min=0" doc:"seconds from start to failure"`
	Error     ErrorInfo `json:"error" v:"required" doc:"why it failed"`
	ExitCode  *int      `json:"exit_code,omitempty" doc:"exec pipelines: the process's exit code"`
}

// SessionCancelled is session.cancelled.
type SessionCancelled struct {
	DurationS float64 `json:"duration_s" v:"required,min=0" doc:"seconds from start to cancellation"`
	Reason    string  `json:"reason" doc:"the cancel_session reason"`
	By        string  `json:"by" doc:"who cancelled: the command's sender, or agent"`
}

// Session statuses of session.state.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// SessionState is session.state, the retained latest snapshot of a session.
type SessionState struct {
	Status     string         `json:"status" v:"required,enum=queued|running|completed|failed|cancelled" doc:"where the session is"`
	Pipeline   string         `json:"pipeline" v:"required" doc:"name of a pipeline configured on the robot"`
	Model      string         `json:"model" v:"required" doc:"model file name"`
	Params     map[string]any `json:"params,omitempty" doc:"the params after defaults were applied"`
	Percent    float64        `json:"percent" v:"required,min=0,max=100" doc:"latest progress"`
	Stage      string         `json:"stage" doc:"latest stage"`
	Message    string         `json:"message" doc:"latest progress message"`
	CreatedAt  Time           `json:"created_at" v:"required" doc:"when the agent accepted the session"`
	StartedAt  *Time          `json:"started_at" doc:"null while queued"`
	FinishedAt *Time          `json:"finished_at" doc:"null until finished"`
	EtaS       *float64       `json:"eta_s" v:"min=0" doc:"seconds left, null when unknown"`
	Result     *SessionResult `json:"result,omitempty" doc:"when completed"`
	Error      *ErrorInfo     `json:"error,omitempty" doc:"when failed"`
}

// Finished reports whether the status is terminal.
func (s *SessionState) Finished() bool {
	return s.Status == StatusCompleted || s.Status == StatusFailed || s.Status == StatusCancelled
}

// Command is command, published to a robot. The envelope id is the command
// id, robot the target, seq 0.
type Command struct {
	Name      string         `json:"name" v:"required,nonempty" doc:"start_session, cancel_session, list_sessions, ping"`
	Args      map[string]any `json:"args" doc:"the command's arguments"`
	ExpiresAt *Time          `json:"expires_at,omitempty" doc:"the agent refuses the command after this time with code expired"`
	ReplyTo   any            `json:"reply_to,omitempty" doc:"correlation data echoed back in the reply"`
}

// CommandError is the error of a failed command.reply.
type CommandError struct {
	Code    string `json:"code" v:"required,nonempty" doc:"invalid_command, unknown_command, unknown_pipeline, invalid_model, invalid_params, unknown_session, session_finished, busy, expired, internal"`
	Message string `json:"message" v:"required" doc:"for people"`
}

// CommandReply is command.reply.
type CommandReply struct {
	CommandID string        `json:"command_id" doc:"empty when the command could not be decoded"`
	OK        bool          `json:"ok" v:"required" doc:"whether the command succeeded"`
	Result    any           `json:"result,omitempty" doc:"the command's result when ok"`
	Error     *CommandError `json:"error,omitempty" doc:"why not, when not ok"`
	ReplyTo   any           `json:"reply_to,omitempty" doc:"the command's reply_to, echoed"`
}

// RelayStats is system.status data.relay.
type RelayStats struct {
	Version       string  `json:"version" v:"required" doc:"fleet-relay version"`
	UptimeS       float64 `json:"uptime_s" v:"required,min=0" doc:"seconds since the relay started"`
	Connections   int     `json:"connections" v:"required,min=0" doc:"dashboard connections (WebSocket and Socket.IO)"`
	MQTTConnected bool    `json:"mqtt_connected" v:"required" doc:"whether the relay's MQTT connection is up"`
}

// SystemStatus is system.status, made by the relay into room fleet.
type SystemStatus struct {
	RobotsOnline    int        `json:"robots_online" v:"required,min=0" doc:"robots whose retained status is online"`
	RobotsKnown     int        `json:"robots_known" v:"required,min=0" doc:"robots the relay has seen"`
	SessionsRunning int        `json:"sessions_running" v:"required,min=0" doc:"sessions whose state is running"`
	Relay           RelayStats `json:"relay" v:"required" doc:"the relay itself"`
}

func (RobotStatus) EventType() string       { return TypeRobotStatus }
func (RobotMetrics) EventType() string      { return TypeRobotMetrics }
func (RobotAlert) EventType() string        { return TypeRobotAlert }
func (RobotNotification) EventType() string { return TypeRobotNotification }
func (SessionQueued) EventType() string     { return TypeSessionQueued }
func (SessionStarted) EventType() string    { return TypeSessionStarted }
func (SessionProgress) EventType() string   { return TypeSessionProgress }
func (SessionCompleted) EventType() string  { return TypeSessionCompleted }
func (SessionFailed) EventType() string     { return TypeSessionFailed }
func (SessionCancelled) EventType() string  { return TypeSessionCancelled }
func (SessionState) EventType() string      { return TypeSessionState }
func (Command) EventType() string           { return TypeCommand }
func (CommandReply) EventType() string      { return TypeCommandReply }
func (SystemStatus) EventType() string      { return TypeSystemStatus }
