// Package config is the robot agent's configuration: the YAML file
// (default /etc/robot-agent/agent.yaml), environment overrides for every
// option (ROBOT_AGENT_<PATH>, e.g. ROBOT_AGENT_MQTT_BROKER), defaults filled
// in one place (FillDefaults) and validation errors that name the field path
// and the rule. The commented sample config (Example) is the documentation.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/robotfleet/fleetlink/agent/alerts"
	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
	"go.yaml.in/yaml/v3"
)

// DefaultPath is where the agent looks for its config file.
const DefaultPath = "/etc/robot-agent/agent.yaml"

// DefaultStateDir is the agent's state directory (systemd StateDirectory).
const DefaultStateDir = "/var/lib/robot-agent"

// EnvPrefix starts every environment override.
const EnvPrefix = "ROBOT_AGENT_"

// example is configs/agent.example.yaml, copied here by go generate (a test
// checks the two are identical).
//
//go:generate cp ../../configs/agent.example.yaml example.yaml
//go:embed example.yaml
var example []byte

// Example returns the complete commented sample config.
func Example() []byte { return example }

// Config is the whole agent configuration. Every field's comment gives its
// default; FillDefaults sets them.
type Config struct {
	// RobotID is this robot's id (spec §1). Default: the hostname, sanitized.
	RobotID string `yaml:"robot_id"`
	// StateDir holds the spool, the session journal and outputs. Default /var/lib/robot-agent.
	StateDir string `yaml:"state_dir"`
	// TopicPrefix of every MQTT topic. Default "fleet".
	TopicPrefix string `yaml:"topic_prefix"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// MQTT configures the uplink.
	MQTT MQTT `yaml:"mqtt"`
	// Metrics configures the sampler.
	Metrics Metrics `yaml:"metrics"`
	// Alerts configures the alert rules.
	Alerts Alerts `yaml:"alerts"`
	// Spool configures the durable outbox.
	Spool Spool `yaml:"spool"`
	// Commands configures command intake.
	Commands Commands `yaml:"commands"`
	// Sessions configures the session manager and its pipelines.
	Sessions session.Config `yaml:"sessions"`
}

// Log configures log/slog.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// MQTT configures the connection to the broker.
type MQTT struct {
	// Broker URL (tcp://, mqtt://, ssl://, tls://, mqtts://, ws:// or wss://),
	// or several to fail over between. Default tcp://127.0.0.1:1883.
	Broker Brokers `yaml:"broker"`
	// Username, empty for none. Default "".
	Username string `yaml:"username"`
	// Password, empty for none. Default "". Masked by `config check`.
	Password string `yaml:"password" secret:"true"`
	// KeepAlive interval. Default 30s.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// ConnectTimeout of one attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMin is the first reconnect delay. Default 500ms.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	// ReconnectFastMax caps the delay during the first reconnect_fast_for of
	// an outage. Default 8s.
	ReconnectFastMax time.Duration `yaml:"reconnect_fast_max"`
	// ReconnectFastFor is how long an outage keeps the fast cap. Default 2m.
	ReconnectFastFor time.Duration `yaml:"reconnect_fast_for"`
	// ReconnectMax caps the exponential reconnect delay after that. Default 60s.
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// InFlight is how many QoS 1 publishes may await their PUBACK. Default 64.
	InFlight int `yaml:"in_flight"`
	// ShutdownTimeout bounds the offline status publish on stop. Default 5s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLS for ssl://, tls:// and wss:// brokers.
	TLS TLS `yaml:"tls"`
}

// TLS configures server verification and the client certificate.
type TLS struct {
	// CAFile verifies the broker; empty means the system roots. Default "".
	CAFile string `yaml:"ca_file"`
	// CertFile is the client certificate (mutual TLS). Default "".
	CertFile string `yaml:"cert_file"`
	// KeyFile is the client certificate's key. Default "".
	KeyFile string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker's certificate. Default "".
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables verification (tests only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Metrics configures the sampler.
type Metrics struct {
	// Interval between robot.metrics publishes, at least 1s. Default 5s.
	Interval time.Duration `yaml:"interval"`
	// Disks are the mount points reported; empty means every real filesystem. Default [].
	Disks []string `yaml:"disks"`
	// GPU collectors: auto (nvidia-smi and Jetson when present), nvidia, jetson or none. Default auto.
	GPU string `yaml:"gpu"`
	// NvidiaSMI is the nvidia-smi binary. Default "nvidia-smi" (looked up in PATH).
	NvidiaSMI string `yaml:"nvidia_smi"`
	// StatusRefresh is how often the model directories are listed; a change
	// in models or pipelines re-publishes robot.status. Default 1m.
	StatusRefresh time.Duration `yaml:"status_refresh"`
}

// Alerts configures the alert rules.
type Alerts struct {
	// Rules; omitted means alerts.DefaultRules(), an empty list disables alerts.
	Rules []alerts.Rule `yaml:"rules"`
}

// Spool configures the durable outbox.
type Spool struct {
	// MaxBytes caps the spool. Default 64MiB.
	MaxBytes ByteSize `yaml:"max_bytes"`
}

// Commands configures command intake.
type Commands struct {
	// Queue is how many received commands may wait (at most 1 MiB of them);
	// more are dropped and counted. Default 32.
	Queue int `yaml:"queue"`
	// MaxAge refuses (code "expired") a command whose ts is further than
	// this from the robot's clock, past or future. Default 10m.
	MaxAge time.Duration `yaml:"max_age"`
	// Remember is how many recent command ids (with their replies) are
	// kept in <state_dir>/commands.db, so that none runs twice, also
	// across restarts. Default 4096.
	Remember int `yaml:"remember"`
}

// Defaults returns the defaults with the env/host derived values filled.
func Defaults() Config {
	var c Config
	c.FillDefaults()
	return c
}

// FillDefaults sets every zero field to its default. It is the one place
// defaults live.
func (c *Config) FillDefaults() {
	if c.RobotID == "" {
		h, _ := os.Hostname()
		c.RobotID = protocol.SanitizeID(h)
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defD := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.StateDir, DefaultStateDir)
	def(&c.TopicPrefix, protocol.DefaultPrefix)
	def(&c.Log.Level, "info")
	def(&c.Log.Format, "text")
	if len(c.MQTT.Broker) == 0 {
		c.MQTT.Broker = Brokers{"tcp://127.0.0.1:1883"}
	}
	defD(&c.MQTT.KeepAlive, 30*time.Second)
	defD(&c.MQTT.ConnectTimeout, 10*time.Second)
	defD(&c.MQTT.ReconnectMin, mqttkit.DefaultBackoffMin)
	defD(&c.MQTT.ReconnectFastMax, mqttkit.DefaultBackoffFastMax)
	defD(&c.MQTT.ReconnectFastFor, mqttkit.DefaultBackoffFastFor)
	defD(&c.MQTT.ReconnectMax, mqttkit.DefaultBackoffMax)
	defD(&c.MQTT.ShutdownTimeout, 5*time.Second)
	if c.MQTT.InFlight == 0 {
		c.MQTT.InFlight = 64
	}
	defD(&c.Metrics.Interval, 5*time.Second)
	if len(c.Metrics.Disks) == 0 {
		c.Metrics.Disks = nil // [] and omitted both mean every real filesystem
	}
	def(&c.Metrics.GPU, "auto")
	def(&c.Metrics.NvidiaSMI, "nvidia-smi")
	defD(&c.Metrics.StatusRefresh, time.Minute)
	if c.Alerts.Rules == nil {
		c.Alerts.Rules = alerts.DefaultRules()
	}
	for i := range c.Alerts.Rules {
		c.Alerts.Rules[i].FillDefaults()
	}
	if c.Spool.MaxBytes == 0 {
		c.Spool.MaxBytes = 64 << 20
	}
	if c.Commands.Queue == 0 {
		c.Commands.Queue = 32
	}
	defD(&c.Commands.MaxAge, 10*time.Minute)
	if c.Commands.Remember == 0 {
		c.Commands.Remember = 4096
	}
	c.Sessions.FillDefaults(c.StateDir)
}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
}

// Validate returns an error naming the first field that breaks a rule.
func (c *Config) Validate() error {
	if err := protocol.CheckID("robot id", c.RobotID); err != nil {
		return invalid("robot_id", "%q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", c.RobotID)
	}
	if _, err := protocol.NewTopics(c.TopicPrefix); err != nil {
		return invalid("topic_prefix", "%q must be MQTT topic levels without wildcards or empty levels", c.TopicPrefix)
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		return invalid("state_dir", "%q must be an absolute path", c.StateDir)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return invalid("log.level", "unsupported level %q (want debug, info, warn, error)", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return invalid("log.format", "unsupported format %q (want text, json)", c.Log.Format)
	}
	if err := mqttkit.ValidateBrokers(c.MQTT.Broker); err != nil {
		return invalid("mqtt.broker", "%v", err)
	}
	if c.MQTT.Password != "" && c.MQTT.Username == "" {
		return invalid("mqtt.username", "must be set when mqtt.password is")
	}
	for _, d := range []struct {
		field string
		v     time.Duration
		min   time.Duration
	}{
		{"mqtt.keep_alive", c.MQTT.KeepAlive, time.Second},
		{"mqtt.connect_timeout", c.MQTT.ConnectTimeout, 100 * time.Millisecond},
		{"mqtt.reconnect_min", c.MQTT.ReconnectMin, 10 * time.Millisecond},
		{"mqtt.reconnect_fast_max", c.MQTT.ReconnectFastMax, c.MQTT.ReconnectMin}, // above reconnect_max it is lowered to it
		{"mqtt.reconnect_max", c.MQTT.ReconnectMax, c.MQTT.ReconnectMin},
		{"mqtt.reconnect_fast_for", c.MQTT.ReconnectFastFor, 0},
		{"mqtt.shutdown_timeout", c.MQTT.ShutdownTimeout, 0},
		{"metrics.interval", c.Metrics.Interval, time.Second},
		{"metrics.status_refresh", c.Metrics.StatusRefresh, time.Second},
	} {
		if d.v < d.min {
			return invalid(d.field, "must be at least %s, got %s", d.min, d.v)
		}
	}
	if c.MQTT.InFlight < 1 || c.MQTT.InFlight > 65535 {
		return invalid("mqtt.in_flight", "must be in [1, 65535], got %d", c.MQTT.InFlight)
	}
	t := c.MQTT.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		return invalid("mqtt.tls.cert_file", "cert_file and key_file must be set together")
	}
	for _, f := range []struct{ field, path string }{
		{"mqtt.tls.ca_file", t.CAFile}, {"mqtt.tls.cert_file", t.CertFile}, {"mqtt.tls.key_file", t.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return invalid(f.field, "cannot read %q: %v", f.path, errors.Unwrap(err))
		}
	}
	for i, d := range c.Metrics.Disks {
		if !strings.HasPrefix(d, "/") {
			return invalid(fmt.Sprintf("metrics.disks[%d]", i), "%q must be an absolute mount point", d)
		}
	}
	switch c.Metrics.GPU {
	case "auto", "nvidia", "jetson", "none":
	default:
		return invalid("metrics.gpu", "unsupported collector %q (want auto, nvidia, jetson, none)", c.Metrics.GPU)
	}
	for i := range c.Alerts.Rules {
		if err := c.Alerts.Rules[i].Validate(); err != nil {
			return fmt.Errorf("%w: alerts.rules[%d].%v", ErrInvalid, i, err)
		}
	}
	if c.Spool.MaxBytes < 1<<20 {
		return invalid("spool.max_bytes", "must be at least 1MiB, got %s", c.Spool.MaxBytes)
	}
	if c.Commands.Queue < 1 {
		return invalid("commands.queue", "must be at least 1, got %d", c.Commands.Queue)
	}
	if c.Commands.MaxAge < 10*time.Second {
		return invalid("commands.max_age", "must be at least 10s, got %s", c.Commands.MaxAge)
	}
	if c.Commands.Remember < 16 || c.Commands.Remember > 1<<20 {
		return invalid("commands.remember", "must be in [16, 1048576], got %d", c.Commands.Remember)
	}
	if err := c.Sessions.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// Load reads path (a missing file is fine when optional), applies the
// environment, fills defaults and validates. getenv is os.Getenv in the
// program and a map in tests.
func Load(path string, optional bool, getenv func(string) string) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, ioEOF) {
			return c, fmt.Errorf("%w %s: %v", ErrRead, path, err)
		}
	case optional && errors.Is(err, fs.ErrNotExist):
	default:
		return c, fmt.Errorf("%w: %v", ErrRead, err)
	}
	if err := ApplyEnv(&c, getenv); err != nil {
		return c, err
	}
	c.FillDefaults()
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// Masked returns the config as YAML with secrets replaced by "***".
func (c Config) Masked() ([]byte, error) {
	if c.MQTT.Password != "" {
		c.MQTT.Password = "***"
	}
	return yaml.Marshal(c)
}
