package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.yaml.in/yaml/v3"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

// Broker options, in the order they win: a flag, else its FLEETCTL_*
// variable, else the config file (--config, FLEETCTL_CONFIG, or
// ~/.config/fleetctl/config.yaml when it exists), else the default. The
// file uses the names of robot-agent's config (topic_prefix, mqtt.broker,
// mqtt.tls.ca_file, ...), so an engineer's file reads like a robot's.
const (
	defaultBroker         = "tcp://127.0.0.1:1883"
	defaultConnectTimeout = 10 * time.Second
	defaultKeepAlive      = 30 * time.Second
)

// fileConfig is fleetctl's config file.
type fileConfig struct {
	// TopicPrefix of every MQTT topic. Default "fleet".
	TopicPrefix string `yaml:"topic_prefix"`
	// MQTT says how to reach the broker.
	MQTT fileMQTT `yaml:"mqtt"`
}

// fileMQTT is the config file's mqtt section: the fields of robot-agent's
// mqtt section that mean something to a client that comes and goes.
type fileMQTT struct {
	// Broker URLs, tried in order (mqttkit.Schemes): a list, or one
	// string with commas. Default tcp://127.0.0.1:1883.
	Broker brokerList `yaml:"broker"`
	// Username, empty for none. Default "".
	Username string `yaml:"username"`
	// Password, empty for none. Default "".
	Password string `yaml:"password"`
	// ConnectTimeout of one attempt on one broker. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// KeepAlive interval. Default 30s.
	KeepAlive time.Duration `yaml:"keep_alive"`
	// ReconnectMin is the first reconnect delay of watch and --follow.
	// Default 500ms. The reconnect schedule is robot-agent's (mqttkit.Backoff).
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	// ReconnectFastMax caps the delay during the first reconnect_fast_for of an outage. Default 8s.
	ReconnectFastMax time.Duration `yaml:"reconnect_fast_max"`
	// ReconnectFastFor is how long an outage keeps the fast cap. Default 2m.
	ReconnectFastFor time.Duration `yaml:"reconnect_fast_for"`
	// ReconnectMax caps the delay after that. Default 1m.
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// TLS for ssl://, tls:// and wss:// brokers.
	TLS tlsFiles `yaml:"tls"`
}

// tlsFiles configures broker verification and the client certificate.
type tlsFiles struct {
	// CAFile verifies the broker; empty means the system roots. Default "".
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile is the client certificate (mutual TLS). Default "".
	CertFile string `yaml:"cert_file" json:"cert_file"`
	// KeyFile is the client certificate's key. Default "".
	KeyFile string `yaml:"key_file" json:"key_file"`
	// ServerName overrides the name checked in the broker's certificate. Default "".
	ServerName string `yaml:"server_name" json:"server_name"`
	// InsecureSkipVerify disables verification (tests only). Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify" json:"insecure_skip_verify"`
}

// brokerList is one or more broker URLs: a YAML list or a comma-separated string.
type brokerList []string

func (b *brokerList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*b = mqttkit.SplitBrokers(n.Value)
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*b = l
		return nil
	}
	return fmt.Errorf("line %d: want a URL or a list of URLs", n.Line)
}

// mqttConfig is how a command reaches the broker. addMQTTFlags declares its
// flags; load resolves them against the environment and the config file.
type mqttConfig struct {
	Brokers        []string // tried in order, on connect and on every reconnect
	Username       string
	Password       string
	ConnectTimeout time.Duration // of one attempt on one broker
	KeepAlive      time.Duration
	Reconnect      mqttkit.Backoff // the schedule of watch's and --follow's reconnects
	TLS            tlsFiles
	Topics         protocol.Topics
	// Sources says where each option came from, by its config file path:
	// "--broker", "FLEETCTL_BROKER", "config mqtt.broker" or "default".
	Sources map[string]string

	tls *tls.Config // built by load when a broker URL asks for TLS
	log io.Writer   // where connection notes go: the command's stderr

	fs    *flag.FlagSet
	flags struct {
		config, broker, prefix, username, password string
		ca, cert, key, serverName                  string
		insecure                                   bool
		connectTimeout                             time.Duration
	}

	mu      sync.Mutex // guards current, trying, fails
	current string     // the broker of the live connection, redacted
	trying  string     // the broker being dialled
	fails   []string   // "broker: error" of the current connection attempt
}

// addMQTTFlags declares the broker flags on fs.
func addMQTTFlags(fs *flag.FlagSet) *mqttConfig {
	c := &mqttConfig{fs: fs}
	f := &c.flags
	fs.StringVar(&f.config, "config", "", "YAML config file (env FLEETCTL_CONFIG; default ~/.config/fleetctl/config.yaml when it exists)")
	fs.StringVar(&f.broker, "broker", "", "MQTT broker URL, or several comma-separated to fail over between: tcp://, mqtt://, ssl://, tls://, mqtts://, ws://, wss:// (env FLEETCTL_BROKER; default "+defaultBroker+")")
	fs.StringVar(&f.prefix, "prefix", "", "topic prefix (env FLEETCTL_TOPIC_PREFIX; default "+protocol.DefaultPrefix+")")
	fs.StringVar(&f.username, "username", "", "MQTT username (env FLEETCTL_USERNAME)")
	fs.StringVar(&f.password, "password", "", "MQTT password (env FLEETCTL_PASSWORD; prefer it or the config file: flags show in ps)")
	fs.StringVar(&f.ca, "tls-ca-file", "", "CA certificate(s) that verify the broker, PEM (env FLEETCTL_TLS_CA_FILE; default the system roots)")
	fs.StringVar(&f.cert, "tls-cert-file", "", "client certificate for mutual TLS, PEM (env FLEETCTL_TLS_CERT_FILE)")
	fs.StringVar(&f.key, "tls-key-file", "", "the client certificate's key, PEM (env FLEETCTL_TLS_KEY_FILE)")
	fs.StringVar(&f.serverName, "tls-server-name", "", "name expected in the broker's certificate (env FLEETCTL_TLS_SERVER_NAME)")
	fs.BoolVar(&f.insecure, "tls-insecure-skip-verify", false, "do not verify the broker's certificate: tests only (env FLEETCTL_TLS_INSECURE_SKIP_VERIFY)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", 0, "how long one connection attempt to one broker may take (env FLEETCTL_CONNECT_TIMEOUT; default 10s)")
	return c
}

// setting is one resolved option and where it came from, for errors.
type setting struct {
	value, source string
}

// load resolves the options: flag, else env, else file, else default, and
// checks them. Errors name the option and where it came from and wrap errUsage.
func (c *mqttConfig) load(log io.Writer) error {
	c.log = log
	if err := c.resolve(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func (c *mqttConfig) resolve() error {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.Sources = map[string]string{}
	// pick resolves the option at path (its name in the config file).
	pick := func(path, flagName, flagVal, env, fileVal, def string) setting {
		st := setting{def, "default"}
		switch {
		case set[flagName]:
			st = setting{flagVal, "--" + flagName}
		case os.Getenv(env) != "":
			st = setting{os.Getenv(env), env}
		case fileVal != "":
			st = setting{fileVal, "config " + path}
		}
		c.Sources[path] = st.source
		return st
	}

	var file fileConfig
	path := c.flags.config
	if !set["config"] {
		path = os.Getenv("FLEETCTL_CONFIG")
	}
	if path != "" {
		if err := c.readConfig(path, &file); err != nil {
			return err
		}
	} else if dir, err := os.UserConfigDir(); err == nil {
		p := filepath.Join(dir, "fleetctl", "config.yaml")
		if err := c.readConfig(p, &file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	f := &c.flags
	fm := &file.MQTT
	dur := func(name string, fv time.Duration, env, key string, filev, def time.Duration) (time.Duration, error) {
		c.Sources[key] = "default"
		switch {
		case set[name]:
			c.Sources[key] = "--" + name
		case os.Getenv(env) != "":
			c.Sources[key] = env
		case filev != 0:
			c.Sources[key] = "config " + key
		}
		if set[name] {
			if fv <= 0 {
				return 0, fmt.Errorf("--%s must be positive, got %s", name, fv)
			}
			return fv, nil
		}
		if v := os.Getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return 0, fmt.Errorf("%s: want a positive duration such as 5s, got %q", env, v)
			}
			return d, nil
		}
		if filev < 0 {
			return 0, fmt.Errorf("config %s must be positive, got %s", key, filev)
		}
		if filev > 0 {
			return filev, nil
		}
		return def, nil
	}

	brokers := pick("mqtt.broker", "broker", f.broker, "FLEETCTL_BROKER", strings.Join(fm.Broker, ","), defaultBroker)
	var err error
	if c.Brokers, err = mqttkit.ParseBrokers(brokers.value); err != nil {
		return fmt.Errorf("%s: %w", brokers.source, err)
	}
	prefix := pick("topic_prefix", "prefix", f.prefix, "FLEETCTL_TOPIC_PREFIX", file.TopicPrefix, protocol.DefaultPrefix)
	if c.Topics, err = protocol.NewTopics(prefix.value); err != nil {
		return fmt.Errorf("%s: %w", prefix.source, err)
	}
	c.Username = pick("mqtt.username", "username", f.username, "FLEETCTL_USERNAME", fm.Username, "").value
	pw := pick("mqtt.password", "password", f.password, "FLEETCTL_PASSWORD", fm.Password, "")
	c.Password = pw.value
	if c.Password != "" && c.Username == "" {
		return fmt.Errorf("%s: a password needs a username (--username, FLEETCTL_USERNAME or mqtt.username)", pw.source)
	}
	if c.ConnectTimeout, err = dur("connect-timeout", f.connectTimeout, "FLEETCTL_CONNECT_TIMEOUT", "mqtt.connect_timeout", fm.ConnectTimeout, defaultConnectTimeout); err != nil {
		return err
	}
	if c.KeepAlive, err = dur("", 0, "FLEETCTL_KEEP_ALIVE", "mqtt.keep_alive", fm.KeepAlive, defaultKeepAlive); err != nil {
		return err
	}
	for _, r := range []struct {
		into      *time.Duration
		env, key  string
		file, def time.Duration
	}{
		{&c.Reconnect.Min, "FLEETCTL_RECONNECT_MIN", "mqtt.reconnect_min", fm.ReconnectMin, mqttkit.DefaultBackoffMin},
		{&c.Reconnect.FastMax, "FLEETCTL_RECONNECT_FAST_MAX", "mqtt.reconnect_fast_max", fm.ReconnectFastMax, mqttkit.DefaultBackoffFastMax},
		{&c.Reconnect.FastFor, "FLEETCTL_RECONNECT_FAST_FOR", "mqtt.reconnect_fast_for", fm.ReconnectFastFor, mqttkit.DefaultBackoffFastFor},
		{&c.Reconnect.Max, "FLEETCTL_RECONNECT_MAX", "mqtt.reconnect_max", fm.ReconnectMax, mqttkit.DefaultBackoffMax},
	} {
		if *r.into, err = dur("", 0, r.env, r.key, r.file, r.def); err != nil {
			return err
		}
	}

	ft := fm.TLS
	c.TLS = tlsFiles{
		CAFile:     pick("mqtt.tls.ca_file", "tls-ca-file", f.ca, "FLEETCTL_TLS_CA_FILE", ft.CAFile, "").value,
		CertFile:   pick("mqtt.tls.cert_file", "tls-cert-file", f.cert, "FLEETCTL_TLS_CERT_FILE", ft.CertFile, "").value,
		KeyFile:    pick("mqtt.tls.key_file", "tls-key-file", f.key, "FLEETCTL_TLS_KEY_FILE", ft.KeyFile, "").value,
		ServerName: pick("mqtt.tls.server_name", "tls-server-name", f.serverName, "FLEETCTL_TLS_SERVER_NAME", ft.ServerName, "").value,
	}
	insecure := pick("mqtt.tls.insecure_skip_verify", "tls-insecure-skip-verify", strconv.FormatBool(f.insecure), "FLEETCTL_TLS_INSECURE_SKIP_VERIFY", boolOrEmpty(ft.InsecureSkipVerify), "false")
	if c.TLS.InsecureSkipVerify, err = strconv.ParseBool(insecure.value); err != nil {
		return fmt.Errorf("%s: want true or false, got %q", insecure.source, insecure.value)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("tls cert file and key file must be given together (--tls-cert-file, --tls-key-file)")
	}
	if mqttkit.NeedsTLS(c.Brokers) {
		if c.tls, err = mqttkit.TLSFiles(c.TLS).Config(); err != nil {
			return err
		}
	}
	return nil
}

func boolOrEmpty(b bool) string {
	if b {
		return "true"
	}
	return ""
}

// readConfig decodes the YAML file at path strictly: a misspelt field is an
// error naming it, not a silent default. A file with a password that others
// may read gets a warning, as ssh gives for keys.
func (c *mqttConfig) readConfig(path string, into *fileConfig) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %v", path, err)
	}
	if st, err := f.Stat(); err == nil && into.MQTT.Password != "" && st.Mode().Perm()&0o077 != 0 && c.log != nil {
		fmt.Fprintf(c.log, "fleetctl: warning: %s holds a password and others may read it (mode %04o); chmod 600 it\n", path, st.Mode().Perm())
	}
	return nil
}

// redact hides a password in a broker URL.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// broker names the broker of the live connection, or the list when none.
func (c *mqttConfig) broker() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current != "" {
		return c.current
	}
	names := make([]string, len(c.Brokers))
	for i, b := range c.Brokers {
		names[i] = redact(b)
	}
	return strings.Join(names, ",")
}

// notify follows paho's connection attempts: which broker is being tried,
// which failed, which one answered. A failover is reported on the log.
func (c *mqttConfig) notify(_ mqtt.Client, n mqtt.ConnectionNotification) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch n := n.(type) {
	case mqtt.ConnectionNotificationConnecting:
		c.fails = c.fails[:0]
	case mqtt.ConnectionNotificationBroker:
		c.trying = n.Broker.Redacted()
	case mqtt.ConnectionNotificationBrokerFailed:
		if len(c.fails) < 16 {
			c.fails = append(c.fails, fmt.Sprintf("%s: %v", n.Broker.Redacted(), n.Reason))
		}
	case mqtt.ConnectionNotificationConnected:
		c.current = c.trying
		if len(c.fails) > 0 && c.log != nil {
			fmt.Fprintf(c.log, "fleetctl: connected to %s; failed before it: %s\n", c.current, clean(strings.Join(c.fails, "; ")))
		}
		c.fails = c.fails[:0]
	case mqtt.ConnectionNotificationLost:
		c.current = ""
	}
}

// connectFailures describes why every broker refused, for the error.
func (c *mqttConfig) connectFailures(err error) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fails) == 0 {
		return err.Error()
	}
	return strings.Join(c.fails, "; ")
}

// connect opens an MQTT connection, trying the brokers in order (a round).
// With reconnect, a lost connection is reconnected round after round, with
// robot-agent's jittered backoff between failed rounds, until ctx ends;
// onConnect runs on every (re)connect, so subscriptions made there survive
// a failover.
func (c *mqttConfig) connect(ctx context.Context, role string, reconnect bool, onConnect mqtt.OnConnectHandler, onLost mqtt.ConnectionLostHandler) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().
		SetClientID("fleetctl-" + role + "-" + randomHex(4)).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetCleanSession(true).
		SetProtocolVersion(4). // no silent 3.1 retry on a second connection
		SetConnectTimeout(c.ConnectTimeout).
		SetKeepAlive(c.KeepAlive).
		SetAutoReconnect(false). // reconnectLoop, with the shared backoff
		SetConnectionNotificationHandler(c.notify).
		SetOrderMatters(true) // arrival order; handlers only enqueue, never block
	mqttkit.AddBrokers(opts, c.Brokers)
	if c.tls != nil {
		opts.SetTLSConfig(c.tls)
	}
	// paho runs OnConnect and the Connected notification on goroutines of
	// their own, in either order: note the broker here too, so what
	// onConnect reports names it (the attempt's broker was noted before).
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		c.mu.Lock()
		c.current = c.trying
		c.mu.Unlock()
		if onConnect != nil {
			onConnect(cl)
		}
	})
	rctx, stop := context.WithCancel(ctx)
	client := &stoppingClient{stop: stop}
	opts.SetConnectionLostHandler(func(cl mqtt.Client, err error) {
		if onLost != nil {
			onLost(cl, err)
		}
		if reconnect {
			go c.reconnectLoop(rctx, client.Client)
		}
	})
	client.Client = mqtt.NewClient(opts)
	if err := mqttkit.Wait(ctx, client.Connect(), c.roundTimeout()); err != nil {
		stop()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("connect to %s: %s", c.broker(), c.connectFailures(err))
	}
	return client, nil
}

// stoppingClient ends its reconnect loop when it is disconnected.
type stoppingClient struct {
	mqtt.Client
	stop context.CancelFunc
}

func (s *stoppingClient) Disconnect(quiesce uint) {
	s.stop()
	s.Client.Disconnect(quiesce)
}

// roundTimeout bounds one connect round: every broker gets its ConnectTimeout.
func (c *mqttConfig) roundTimeout() time.Duration {
	return time.Duration(len(c.Brokers))*c.ConnectTimeout + time.Second
}

// reconnectLoop connects client again after a loss: a round over the
// brokers, then the backoff's next delay, until a round succeeds or ctx
// ends. The first round waits the backoff's first delay, so a broker that
// drops every client at once does not get them all back at once.
func (c *mqttConfig) reconnectLoop(ctx context.Context, client mqtt.Client) {
	bo := c.Reconnect // a copy: one schedule per outage
	for {
		if !bo.Sleep(ctx) {
			return
		}
		err := mqttkit.Wait(ctx, client.Connect(), c.roundTimeout())
		if err == nil || ctx.Err() != nil {
			return
		}
		if c.log != nil {
			fmt.Fprintf(c.log, "fleetctl: reconnect to %s failed: %s; retrying\n", c.broker(), clean(c.connectFailures(err)))
		}
	}
}

// open resolves the options (see load) and connects without reconnecting:
// for the commands that do one thing and exit.
func (c *mqttConfig) open(ctx context.Context, log io.Writer, role string) (mqtt.Client, error) {
	if err := c.load(log); err != nil {
		return nil, err
	}
	return c.connect(ctx, role, false, nil, nil)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
