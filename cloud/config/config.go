// Package config is fleet-relay's configuration: the YAML file, the
// FLEET_RELAY_* environment overrides of spec §8, defaults filled in one
// place (Default), and validation whose errors name the field path and the
// rule. The commented sample (relay.example.yaml) is embedded and printed by
// `fleet-relay config example`.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

// Example is the commented sample config; every value in it is the default.
//
//go:embed relay.example.yaml
var Example []byte

// Config is the whole relay configuration.
type Config struct {
	// Listen is the HTTP/WebSocket address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// TLS serves HTTPS/WSS when both files are set. Default off.
	TLS TLSFiles `yaml:"tls"`
	// AllowedOrigins are the browser origins allowed on /ws ("*" = any).
	// Default empty: only the relay's own host.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// InsecureNoAuth allows auth off on a non-loopback listen address.
	// Default false.
	InsecureNoAuth bool `yaml:"insecure_no_auth"`
	// TopicPrefix of every MQTT topic. Default fleet.
	TopicPrefix string `yaml:"topic_prefix"`
	// MQTT is the broker connection.
	MQTT MQTT `yaml:"mqtt"`
	// Embedded is the embedded broker, used when mqtt.broker is empty.
	Embedded Embedded `yaml:"embedded_mqtt"`
	// NATS keeps the fleet's history in JetStream (spec §8). Default off.
	NATS NATS `yaml:"nats"`
	// Auth is dashboard client authentication.
	Auth Auth `yaml:"auth"`
	// WS tunes WebSocket clients.
	WS WS `yaml:"ws"`
	// Hub sizes the caches.
	Hub Hub `yaml:"hub"`
	// Commands tunes the command op.
	Commands Commands `yaml:"commands"`
	// History is the per-robot metrics history behind the dashboard's charts.
	History History `yaml:"history"`
	// Prometheus tunes /metrics.
	Prometheus Prometheus `yaml:"prometheus"`
	// HTTP bounds the HTTP server's connections.
	HTTP HTTP `yaml:"http"`
	// SystemStatusInterval is the period of system.status. Default 10s.
	SystemStatusInterval time.Duration `yaml:"system_status_interval"`
	// ShutdownTimeout bounds the graceful shutdown. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Log configures logging.
	Log Log `yaml:"log"`
}

// TLSFiles names a certificate and its key (PEM).
type TLSFiles struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// MQTT is the relay's broker connection.
type MQTT struct {
	// Broker URL (tcp://, ssl://, ws://, wss://). Default empty: start the
	// embedded broker and connect to it.
	Broker string `yaml:"broker"`
	// Brokers are more broker URLs; the relay uses one at a time and fails
	// over to the next (Broker, if set, comes first). Default none.
	Brokers []string `yaml:"brokers"`
	// Username and Password for the broker. Default none.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ClientID names the relay's persistent MQTT session: the broker queues
	// what the relay misses under it. Keep it stable; every replica needs
	// its own. Default fleet-relay-<hostname>.
	ClientID string `yaml:"client_id"`
	// CAFile verifies the broker's certificate. Default system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate. Default none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify skips broker certificate checks (tests only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
	// QueueMessages caps messages waiting for decoding. Default 16384.
	QueueMessages int `yaml:"queue_messages"`
	// QueueBytes caps their bytes. Default 67108864 (64 MiB).
	QueueBytes int64 `yaml:"queue_bytes"`
	// ReconnectMin and ReconnectMax bound the jittered backoff. Defaults 250ms, 5s.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// ConnectTimeout bounds a connection attempt and a SUBACK. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// BrokerList is Broker (split at commas) followed by Brokers.
func (m MQTT) BrokerList() []string {
	out := mqttkit.SplitBrokers(m.Broker)
	for _, b := range m.Brokers {
		out = append(out, mqttkit.SplitBrokers(b)...)
	}
	return out
}

// External reports whether an external broker is configured (else the
// relay starts the embedded one).
func (m MQTT) External() bool { return len(m.BrokerList()) > 0 }

// Embedded is the embedded broker.
type Embedded struct {
	// Listen is the MQTT TCP address. Default 127.0.0.1:1883.
	Listen string `yaml:"listen"`
	// TLSListen adds MQTT over TLS (needs tls_cert_file, tls_key_file). Default off.
	TLSListen   string `yaml:"tls_listen"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// WSListen adds MQTT over WebSocket. Default off.
	WSListen string `yaml:"ws_listen"`
	// WSAllowedOrigins are the browser origins allowed on ws_listen ("*" =
	// any). Default empty: only pages from the listener's own host.
	WSAllowedOrigins []string `yaml:"ws_allowed_origins"`
	// Users: robots (username = robot id) and admin accounts. Default none:
	// anonymous clients with full access, allowed on loopback listeners only.
	Users []broker.User `yaml:"users"`
	// PasswordFile is a Mosquitto password file (username:hash lines) of
	// robot accounts, added to Users. Default none.
	PasswordFile string `yaml:"password_file"`
	// InsecureAnonymous names listeners (tcp, tls, ws) that may serve
	// anonymous clients beyond loopback. Default none.
	InsecureAnonymous []string `yaml:"insecure_anonymous"`
	// Limits bound packets, retained messages, sessions and failed logins.
	Limits broker.Limits `yaml:"limits"`
}

// Accounts returns Users plus the accounts of PasswordFile.
func (e Embedded) Accounts() ([]broker.User, error) {
	users := append([]broker.User(nil), e.Users...)
	if e.PasswordFile == "" {
		return users, nil
	}
	f, err := os.Open(e.PasswordFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	more, err := broker.ReadPasswordFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.PasswordFile, err)
	}
	return append(users, more...), nil
}

// NATS is the JetStream history: when urls are set, the relay keeps the
// fleet's events in a stream, replays it before it reports ready, and serves
// old resumes from it.
type NATS struct {
	// URLs are NATS client URLs. Default empty: history in memory only.
	URLs []string `yaml:"urls"`
	// Username and Password for NATS. Default none.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Stream name, created when missing. Default FLEET_HISTORY.
	Stream string `yaml:"stream"`
	// MaxAge of kept events. Default 24h.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBytes of the stream; the oldest events go first. Default 1073741824 (1 GiB).
	MaxBytes int64 `yaml:"max_bytes"`
	// Replicas of the stream (3 on a 3-node cluster). Default 1.
	Replicas int `yaml:"replicas"`
}

// Auth is dashboard authentication. Auth is on when any key or token is set.
type Auth struct {
	// Secret verifies HS256 JWTs. Default empty.
	Secret string `yaml:"secret"`
	// PublicKeyFile verifies RS256/ES256 JWTs (PEM). Default empty.
	PublicKeyFile string `yaml:"public_key_file"`
	// StaticTokens for small deployments. Default none.
	StaticTokens []auth.StaticToken `yaml:"static_tokens"`
	// Leeway for clock skew on exp. Default 0s.
	Leeway time.Duration `yaml:"leeway"`
}

// Enabled reports whether auth is on.
func (a Auth) Enabled() bool {
	return a.Secret != "" || a.PublicKeyFile != "" || len(a.StaticTokens) > 0
}

// WS tunes WebSocket clients.
type WS struct {
	// Heartbeat is the server ping period (heartbeat_s). Default 25s.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// ClientGrace: silent for heartbeat + this → closed. Default 20s.
	ClientGrace time.Duration `yaml:"client_grace"`
	// WriteTimeout of every write. Default 10s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// QueueBytes caps one client's queue. Default 1048576 (1 MiB).
	QueueBytes int `yaml:"queue_bytes"`
	// ReadLimit is the largest client frame. Default 65536.
	ReadLimit int64 `yaml:"read_limit"`
	// MaxRooms per client. Default 128.
	MaxRooms int `yaml:"max_rooms"`
	// SnapshotRatePerCore paces the snapshot parts of every client
	// together, in bytes per second per core of the relay (GOMAXPROCS), so
	// a reconnect storm cannot take the CPU from live frames. 0: no
	// pacing. Default 16777216 (16 MiB/s per core).
	SnapshotRatePerCore int64 `yaml:"snapshot_rate_per_core"`
	// AcceptRatePerCore paces new connections (/ws and Socket.IO sessions
	// together), per second per core of the relay, after a burst of a
	// quarter second's worth; the rest wait in line. 0: no pacing.
	// Default 250.
	AcceptRatePerCore float64 `yaml:"accept_rate_per_core"`
	// AcceptWait is the longest a new connection waits in that line; past
	// it the relay answers 503 with Retry-After. Default 10s.
	AcceptWait time.Duration `yaml:"accept_wait"`
	// OpsPerSecond per client, and the burst. Defaults 20 and 40.
	OpsPerSecond float64 `yaml:"ops_per_second"`
	OpsBurst     float64 `yaml:"ops_burst"`
	// SocketIOMaxSessions caps the Engine.IO session table. Default 100000.
	SocketIOMaxSessions int `yaml:"socketio_max_sessions"`
	// SocketIOMaxPending caps the sessions that have not joined the
	// namespace yet (no token checked). Default 1000.
	SocketIOMaxPending int `yaml:"socketio_max_pending"`
	// SocketIOMaxPendingPerAddr caps those per client address. Default 16.
	SocketIOMaxPendingPerAddr int `yaml:"socketio_max_pending_per_address"`
	// SocketIOConnectTimeout closes a session that has not joined the
	// namespace in time. Default 10s.
	SocketIOConnectTimeout time.Duration `yaml:"socketio_connect_timeout"`
}

// Hub sizes the caches.
type Hub struct {
	// RingEvents per robot and session room. Default 300.
	RingEvents int `yaml:"ring_events"`
	// RingBytes caps one ring. Default 1048576.
	RingBytes int `yaml:"ring_bytes"`
	// DedupIDs remembered. Default 65536.
	DedupIDs int `yaml:"dedup_ids"`
	// MaxRobots known at once. Default 10000.
	MaxRobots int `yaml:"max_robots"`
	// SessionsPerRobot kept. Default 32.
	SessionsPerRobot int `yaml:"sessions_per_robot"`
	// RobotTTL evicts robots not heard from. Default 24h.
	RobotTTL time.Duration `yaml:"robot_ttl"`
	// RobotBytes caps what one robot and its sessions may make the relay
	// cache. Default 4194304 (4 MiB).
	RobotBytes int `yaml:"robot_bytes"`
	// TotalBytes caps the caches over every robot. Default 1073741824 (1 GiB).
	TotalBytes int `yaml:"total_bytes"`
	// MaxTextBytes caps each string of an event's data. Default 4096.
	MaxTextBytes int `yaml:"max_text_bytes"`
}

// Commands tunes the command op.
type Commands struct {
	// Timeout for a reply (robot_timeout), also the command's expires_at. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxPending commands. Default 10000.
	MaxPending int `yaml:"max_pending"`
	// MaxPendingPerPrincipal caps one token subject's pending commands.
	// Default 100.
	MaxPendingPerPrincipal int `yaml:"max_pending_per_principal"`
}

// History is the per-robot metrics history (GET /api/v1/robots/{id}/metrics).
type History struct {
	// Window kept per robot. Default 15m.
	Window time.Duration `yaml:"window"`
	// Step: the samples of one step are averaged into one point. Default 5s.
	Step time.Duration `yaml:"step"`
	// RobotBytes caps one robot's history. Default 32768.
	RobotBytes int `yaml:"robot_bytes"`
	// TotalBytes caps all robots' history. Default 67108864 (64 MiB).
	TotalBytes int `yaml:"total_bytes"`
}

// Prometheus tunes /metrics.
type Prometheus struct {
	// RobotGauges exports fleet_robot_*{robot=...} gauges for every robot
	// (at most hub.max_robots). Default false.
	RobotGauges bool `yaml:"robot_gauges"`
	// Listen serves /metrics on a listener of its own, without a token, and
	// no longer on the main one. Default empty: /metrics on the main
	// listener, needing an admin token for every robot when auth is on.
	Listen string `yaml:"listen"`
	// Pprof also serves Go's profiles (/debug/pprof/) on Listen, for
	// finding where the relay's CPU and memory go. Default false; needs
	// Listen (never on the main listener).
	Pprof bool `yaml:"pprof"`
}

// HTTP bounds the HTTP server's connections (not upgraded WebSockets and
// Socket.IO long-polls, which have their own heartbeats).
type HTTP struct {
	// IdleTimeout closes a keep-alive connection idle this long. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// BodyTimeout bounds reading a request's body. Default 30s.
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// MaxConnsPerAddr caps the open connections of one client IP address
	// (WebSockets included); past it new ones are closed at once.
	// Behind a load balancer that does not keep client addresses, raise it.
	// Default 256.
	MaxConnsPerAddr int `yaml:"max_conns_per_addr"`
	// LimitLoopback applies MaxConnsPerAddr to loopback clients too (a
	// reverse proxy on the same host, local tools). Default false.
	LimitLoopback bool `yaml:"limit_loopback"`
}

// Log configures logging.
type Log struct {
	// Level: debug, info, warn, error. Default info.
	Level string `yaml:"level"`
	// Format: text or json. Default text.
	Format string `yaml:"format"`
}

// Default returns the defaults; every other constructor starts from it.
func Default() Config {
	return Config{
		Listen:         "127.0.0.1:8080",
		AllowedOrigins: []string{},
		TopicPrefix:    protocol.DefaultPrefix,
		MQTT: MQTT{Brokers: []string{}, QueueMessages: 16384, QueueBytes: 64 << 20, ReconnectMin: 250 * time.Millisecond,
			ReconnectMax: 5 * time.Second, ConnectTimeout: 10 * time.Second},
		Embedded: Embedded{Listen: "127.0.0.1:1883", Users: []broker.User{}, WSAllowedOrigins: []string{},
			InsecureAnonymous: []string{}, Limits: broker.DefaultLimits()},
		NATS: NATS{URLs: []string{}, Stream: "FLEET_HISTORY", MaxAge: 24 * time.Hour, MaxBytes: 1 << 30, Replicas: 1},
		Auth: Auth{StaticTokens: []auth.StaticToken{}},
		WS: WS{SnapshotRatePerCore: 16 << 20, AcceptRatePerCore: 250, AcceptWait: 10 * time.Second, Heartbeat: 25 * time.Second, ClientGrace: 20 * time.Second, WriteTimeout: 10 * time.Second,
			QueueBytes: 1 << 20, ReadLimit: 64 << 10, MaxRooms: 128, OpsPerSecond: 20, OpsBurst: 40,
			SocketIOMaxSessions: 100000, SocketIOMaxPending: 1000, SocketIOMaxPendingPerAddr: 16, SocketIOConnectTimeout: 10 * time.Second},
		Hub: Hub{RingEvents: 300, RingBytes: 1 << 20, DedupIDs: 65536, MaxRobots: 10000, SessionsPerRobot: 32,
			RobotTTL: 24 * time.Hour, RobotBytes: 4 << 20, TotalBytes: 1 << 30, MaxTextBytes: 4096},
		Commands:             Commands{Timeout: 10 * time.Second, MaxPending: 10000, MaxPendingPerPrincipal: 100},
		History:              History{Window: 15 * time.Minute, Step: 5 * time.Second, RobotBytes: 32 << 10, TotalBytes: 64 << 20},
		HTTP:                 HTTP{IdleTimeout: 2 * time.Minute, BodyTimeout: 30 * time.Second, MaxConnsPerAddr: 256},
		SystemStatusInterval: 10 * time.Second,
		ShutdownTimeout:      10 * time.Second,
		Log:                  Log{Level: "info", Format: "text"},
	}
}

// Load returns Default overlaid with the YAML file at path ("" = none) and
// then the environment. It does not validate.
func Load(path string, getenv func(string) (string, bool)) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("%w: %v", ErrRead, err)
		}
		if err := Parse(b, &c); err != nil {
			return c, fmt.Errorf("%w: %s: %v", ErrRead, path, err)
		}
	}
	if getenv == nil {
		getenv = os.LookupEnv
	}
	c.ApplyEnv(getenv)
	return c, nil
}

// Parse decodes YAML over c, refusing unknown fields.
func Parse(b []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // an empty file overrides nothing
		return err
	}
	return nil
}

// Environment variables of spec §8.
const (
	EnvListen         = "FLEET_RELAY_LISTEN"
	EnvMQTTBroker     = "FLEET_RELAY_MQTT_BROKER" // one URL or several, comma-separated
	EnvMQTTClientID   = "FLEET_RELAY_MQTT_CLIENT_ID"
	EnvEmbeddedListen = "FLEET_RELAY_EMBEDDED_MQTT_LISTEN"
	EnvAuthSecret     = "FLEET_RELAY_AUTH_SECRET"
	EnvTopicPrefix    = "FLEET_RELAY_TOPIC_PREFIX"
	EnvNATSURL        = "FLEET_RELAY_NATS_URL"     // comma-separated
	EnvRobotGauges    = "FLEET_RELAY_ROBOT_GAUGES" // prometheus.robot_gauges: true or false
	EnvPromListen     = "FLEET_RELAY_PROMETHEUS_LISTEN"
	EnvPprof          = "FLEET_RELAY_PPROF"                     // prometheus.pprof: true or false
	EnvSnapshotRate   = "FLEET_RELAY_WS_SNAPSHOT_RATE_PER_CORE" // bytes per second per core
	EnvAcceptRate     = "FLEET_RELAY_WS_ACCEPT_RATE_PER_CORE"   // new connections per second per core
)

// ApplyEnv applies the FLEET_RELAY_* overrides that are set and not empty.
// An empty value overrides nothing: an empty FLEET_RELAY_AUTH_SECRET left in
// a unit file must not switch off a secret the config file sets.
func (c *Config) ApplyEnv(getenv func(string) (string, bool)) {
	set := func(name string, dst *string) {
		if v, ok := getenv(name); ok && v != "" {
			*dst = v
		}
	}
	set(EnvListen, &c.Listen)
	set(EnvMQTTBroker, &c.MQTT.Broker)
	set(EnvMQTTClientID, &c.MQTT.ClientID)
	set(EnvEmbeddedListen, &c.Embedded.Listen)
	set(EnvAuthSecret, &c.Auth.Secret)
	set(EnvTopicPrefix, &c.TopicPrefix)
	if v, ok := getenv(EnvNATSURL); ok && strings.TrimSpace(v) != "" {
		c.NATS.URLs = c.NATS.URLs[:0]
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.NATS.URLs = append(c.NATS.URLs, u)
			}
		}
	}
	if v, ok := getenv(EnvRobotGauges); ok && v != "" {
		c.Prometheus.RobotGauges = v == "true" || v == "1"
	}
	if v, ok := getenv(EnvPromListen); ok && v != "" {
		c.Prometheus.Listen = v
	}
	if v, ok := getenv(EnvPprof); ok && v != "" {
		c.Prometheus.Pprof = v == "true" || v == "1"
	}
	if v, ok := getenv(EnvSnapshotRate); ok && v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			n = -1 // Validate names the field
		}
		c.WS.SnapshotRatePerCore = n
	}
	if v, ok := getenv(EnvAcceptRate); ok && v != "" {
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			n = -1 // Validate names the field
		}
		c.WS.AcceptRatePerCore = n
	}
}

// Validate checks every rule and returns all violations, each naming the
// field path.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalid, path, fmt.Sprintf(format, args...)))
	}
	checkAddr := func(path, v string, required bool) {
		if v == "" {
			if required {
				bad(path, "is required (host:port)")
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(path, "must be host:port, got %q", v)
		}
	}
	positive := func(path string, v float64) {
		if v <= 0 {
			bad(path, "must be > 0, got %v", v)
		}
	}
	checkAddr("listen", c.Listen, true)
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file must be set together")
	}
	if _, err := protocol.NewTopics(c.TopicPrefix); err != nil {
		bad("topic_prefix", "%v", err)
	}
	if !c.MQTT.External() {
		checkAddr("embedded_mqtt.listen", c.Embedded.Listen, true)
		checkAddr("embedded_mqtt.tls_listen", c.Embedded.TLSListen, false)
		checkAddr("embedded_mqtt.ws_listen", c.Embedded.WSListen, false)
		if c.Embedded.TLSListen != "" && (c.Embedded.TLSCertFile == "" || c.Embedded.TLSKeyFile == "") {
			bad("embedded_mqtt.tls_listen", "needs tls_cert_file and tls_key_file")
		}
		for i, u := range c.Embedded.Users {
			p := fmt.Sprintf("embedded_mqtt.users[%d]", i)
			if u.Username == "" {
				bad(p+".username", "is required")
			} else if !u.Admin && !protocol.ValidID(u.Username) {
				bad(p+".username", "must be a robot id (spec §1) unless admin is true, got %q", u.Username)
			}
			if u.Password == "" {
				bad(p+".password", "is required (a hash from `fleet-relay passwd`)")
			} else if err := broker.CheckPasswordFormat(u.Password); err != nil {
				bad(p+".password", "%v", err)
			}
		}
		accounts, err := c.Embedded.Accounts()
		if err != nil {
			bad("embedded_mqtt.password_file", "%v", err)
		}
		for i, n := range c.Embedded.InsecureAnonymous {
			if n != broker.ListenerTCP && n != broker.ListenerTLS && n != broker.ListenerWS {
				bad(fmt.Sprintf("embedded_mqtt.insecure_anonymous[%d]", i), "must be tcp, tls or ws, got %q", n)
			}
		}
		if err == nil && len(accounts) == 0 {
			addrs := map[string]string{broker.ListenerTCP: c.Embedded.Listen, broker.ListenerTLS: c.Embedded.TLSListen,
				broker.ListenerWS: c.Embedded.WSListen}
			if msg := broker.AnonymousError(addrs, c.Embedded.InsecureAnonymous); msg != "" {
				bad("embedded_mqtt.users", "%s", msg)
			}
		}
		if err := c.Embedded.Limits.Check(); err != nil {
			for _, e := range strings.Split(err.Error(), "\n") {
				key, rule, _ := strings.Cut(e, ": ")
				bad("embedded_mqtt.limits."+key, "%s", rule)
			}
		}
	} else if err := mqttkit.ValidateBrokers(c.MQTT.BrokerList()); err != nil {
		bad("mqtt.broker", "must be a URL like tcp://host:1883 (several: comma-separated, or mqtt.brokers): %v", err)
	}
	if (c.MQTT.CertFile == "") != (c.MQTT.KeyFile == "") {
		bad("mqtt", "cert_file and key_file must be set together")
	}
	positive("mqtt.queue_messages", float64(c.MQTT.QueueMessages))
	positive("mqtt.queue_bytes", float64(c.MQTT.QueueBytes))
	positive("mqtt.reconnect_min", float64(c.MQTT.ReconnectMin))
	if c.MQTT.ReconnectMax < c.MQTT.ReconnectMin {
		bad("mqtt.reconnect_max", "must be >= reconnect_min (%s), got %s", c.MQTT.ReconnectMin, c.MQTT.ReconnectMax)
	}
	positive("mqtt.connect_timeout", float64(c.MQTT.ConnectTimeout))
	for i, u := range c.NATS.URLs {
		if !strings.Contains(u, "://") {
			bad(fmt.Sprintf("nats.urls[%d]", i), "must be a URL like nats://host:4222, got %q", u)
		}
	}
	if len(c.NATS.URLs) > 0 {
		if c.NATS.Stream == "" || strings.ContainsAny(c.NATS.Stream, " .*>") {
			bad("nats.stream", "must be a stream name without spaces, '.', '*' or '>', got %q", c.NATS.Stream)
		}
		positive("nats.max_age", float64(c.NATS.MaxAge))
		positive("nats.max_bytes", float64(c.NATS.MaxBytes))
		if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
			bad("nats.replicas", "must be 1..5, got %d", c.NATS.Replicas)
		}
	}
	for i, st := range c.Auth.StaticTokens {
		p := fmt.Sprintf("auth.static_tokens[%d]", i)
		if len(st.Token) < 16 {
			bad(p+".token", "must be at least 16 characters")
		}
		if st.Role != "" {
			if _, err := auth.ParseRole(st.Role); err != nil {
				bad(p+".role", "must be viewer, operator or admin, got %q", st.Role)
			}
		}
		if err := auth.CheckPatterns(st.Robots); err != nil {
			bad(p+".robots", "%v", err)
		}
	}
	if !c.Auth.Enabled() && !c.InsecureNoAuth && !Loopback(c.Listen) {
		bad("auth", "is off (no secret, public_key_file or static_tokens) and listen %q is not a loopback address: "+
			"anyone who can reach it could watch and command the fleet; set FLEET_RELAY_AUTH_SECRET (or auth.*), "+
			"listen on 127.0.0.1, or pass --insecure-no-auth", c.Listen)
	}
	checkAddr("prometheus.listen", c.Prometheus.Listen, false)
	if c.Prometheus.Pprof && c.Prometheus.Listen == "" {
		bad("prometheus.pprof", "needs prometheus.listen: profiles are served only on that listener, never on the main one")
	}
	positive("http.idle_timeout", float64(c.HTTP.IdleTimeout))
	positive("http.body_timeout", float64(c.HTTP.BodyTimeout))
	positive("http.max_conns_per_addr", float64(c.HTTP.MaxConnsPerAddr))
	positive("ws.heartbeat", float64(c.WS.Heartbeat))
	positive("ws.client_grace", float64(c.WS.ClientGrace))
	positive("ws.write_timeout", float64(c.WS.WriteTimeout))
	if c.WS.SnapshotRatePerCore < 0 {
		bad("ws.snapshot_rate_per_core", "must be a number of bytes per second >= 0 (0: no pacing), also in %s", EnvSnapshotRate)
	}
	if c.WS.AcceptRatePerCore < 0 || math.IsNaN(c.WS.AcceptRatePerCore) || math.IsInf(c.WS.AcceptRatePerCore, 0) {
		bad("ws.accept_rate_per_core", "must be a number of connections per second >= 0 (0: no pacing), also in %s", EnvAcceptRate)
	}
	positive("ws.accept_wait", float64(c.WS.AcceptWait))
	if c.WS.QueueBytes < 4096 {
		bad("ws.queue_bytes", "must be >= 4096, got %d", c.WS.QueueBytes)
	}
	if c.WS.ReadLimit < 512 {
		bad("ws.read_limit", "must be >= 512, got %d", c.WS.ReadLimit)
	}
	positive("ws.max_rooms", float64(c.WS.MaxRooms))
	positive("ws.ops_per_second", c.WS.OpsPerSecond)
	if c.WS.OpsBurst < 1 {
		bad("ws.ops_burst", "must be >= 1, got %v", c.WS.OpsBurst)
	}
	positive("hub.ring_events", float64(c.Hub.RingEvents))
	positive("hub.ring_bytes", float64(c.Hub.RingBytes))
	positive("hub.dedup_ids", float64(c.Hub.DedupIDs))
	positive("hub.max_robots", float64(c.Hub.MaxRobots))
	positive("hub.sessions_per_robot", float64(c.Hub.SessionsPerRobot))
	positive("hub.robot_ttl", float64(c.Hub.RobotTTL))
	positive("hub.robot_bytes", float64(c.Hub.RobotBytes))
	positive("hub.total_bytes", float64(c.Hub.TotalBytes))
	positive("hub.max_text_bytes", float64(c.Hub.MaxTextBytes))
	positive("ws.socketio_max_sessions", float64(c.WS.SocketIOMaxSessions))
	positive("ws.socketio_max_pending", float64(c.WS.SocketIOMaxPending))
	positive("ws.socketio_max_pending_per_address", float64(c.WS.SocketIOMaxPendingPerAddr))
	positive("ws.socketio_connect_timeout", float64(c.WS.SocketIOConnectTimeout))
	positive("history.window", float64(c.History.Window))
	if c.History.Step < time.Second || c.History.Step > c.History.Window {
		bad("history.step", "must be between 1s and history.window (%s), got %s", c.History.Window, c.History.Step)
	}
	if c.History.RobotBytes < 4096 {
		bad("history.robot_bytes", "must be >= 4096, got %d", c.History.RobotBytes)
	}
	if c.History.TotalBytes < c.History.RobotBytes {
		bad("history.total_bytes", "must be >= history.robot_bytes (%d), got %d", c.History.RobotBytes, c.History.TotalBytes)
	}
	positive("commands.timeout", float64(c.Commands.Timeout))
	positive("commands.max_pending", float64(c.Commands.MaxPending))
	positive("commands.max_pending_per_principal", float64(c.Commands.MaxPendingPerPrincipal))
	positive("system_status_interval", float64(c.SystemStatusInterval))
	positive("shutdown_timeout", float64(c.ShutdownTimeout))
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "must be text or json, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

// Loopback reports whether addr (host:port) listens on loopback only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
