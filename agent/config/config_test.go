package config_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/config"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestExampleIsTheEmbeddedCopy(t *testing.T) {
	b, err := os.ReadFile("../../configs/agent.example.yaml")
	require.NoError(t, err)
	require.True(t, bytes.Equal(b, config.Example()), "agent/config/example.yaml is stale: run go generate ./agent/config")
}

func TestExampleLoadsToTheDefaults(t *testing.T) {
	got, err := config.Load(write(t, string(config.Example())), false, env(nil))
	require.NoError(t, err)
	require.Equal(t, config.Defaults(), got)
}

func TestMissingOptionalFileRunsOnDefaults(t *testing.T) {
	c, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"), true, env(nil))
	require.NoError(t, err)
	require.Equal(t, config.Brokers{"tcp://127.0.0.1:1883"}, c.MQTT.Broker)
	require.Equal(t, "/var/lib/robot-agent", c.StateDir)
	require.Equal(t, 5*time.Second, c.Metrics.Interval)
	require.Len(t, c.Sessions.Pipelines, 2)
	require.Equal(t, "quantize-int8", c.Sessions.Pipelines[0].Name)
	require.NotEmpty(t, c.RobotID)
	_, err = config.Load(filepath.Join(t.TempDir(), "nope.yaml"), false, env(nil))
	require.ErrorIs(t, err, config.ErrRead)
}

func TestSpecEnvVars(t *testing.T) {
	c, err := config.Load(write(t, "mqtt: {broker: tcp://file:1883}\n"), false, env(map[string]string{
		"ROBOT_AGENT_ROBOT_ID":           "r-42",
		"ROBOT_AGENT_MQTT_BROKER":        "ws://broker:9001/mqtt",
		"ROBOT_AGENT_MQTT_USERNAME":      "u",
		"ROBOT_AGENT_MQTT_PASSWORD":      "s3cret",
		"ROBOT_AGENT_STATE_DIR":          "/tmp/ra",
		"ROBOT_AGENT_MODEL_DIRS":         "/m1:/m2",
		"ROBOT_AGENT_METRICS_INTERVAL":   "1s",
		"ROBOT_AGENT_TOPIC_PREFIX":       "acme/fleet",
		"ROBOT_AGENT_SPOOL_MAX_BYTES":    "2MiB",
		"ROBOT_AGENT_LOG_FORMAT":         "json",
		"ROBOT_AGENT_MQTT_RECONNECT_MIN": "100ms",
	}))
	require.NoError(t, err)
	require.Equal(t, "r-42", c.RobotID)
	require.Equal(t, config.Brokers{"ws://broker:9001/mqtt"}, c.MQTT.Broker)
	require.Equal(t, "u", c.MQTT.Username)
	require.Equal(t, "s3cret", c.MQTT.Password)
	require.Equal(t, "/tmp/ra", c.StateDir)
	require.Equal(t, []string{"/m1", "/m2"}, c.Sessions.ModelDirs)
	require.Equal(t, time.Second, c.Metrics.Interval)
	require.Equal(t, "acme/fleet", c.TopicPrefix)
	require.EqualValues(t, 2<<20, c.Spool.MaxBytes)
	require.Equal(t, "json", c.Log.Format)
	require.Equal(t, 100*time.Millisecond, c.MQTT.ReconnectMin)

	// Model dirs default under the state dir.
	c, err = config.Load(write(t, ""), false, env(map[string]string{"ROBOT_AGENT_STATE_DIR": "/srv/ra"}))
	require.NoError(t, err)
	require.Equal(t, []string{"/srv/ra/models"}, c.Sessions.ModelDirs)
}

func TestListsOfObjectsFromEnv(t *testing.T) {
	c, err := config.Load(write(t, ""), false, env(map[string]string{
		"ROBOT_AGENT_ALERTS_RULES": "[{name: hot, metric: cpu_temperature, threshold: 80, for: 10s}]",
	}))
	require.NoError(t, err)
	require.Len(t, c.Alerts.Rules, 1)
	require.Equal(t, "hot", c.Alerts.Rules[0].Name)
	require.Equal(t, 10*time.Second, c.Alerts.Rules[0].For)
	require.Equal(t, ">=", c.Alerts.Rules[0].Op, "defaults fill env values too")

	c, err = config.Load(write(t, ""), false, env(map[string]string{"ROBOT_AGENT_ALERTS_RULES": "[]"}))
	require.NoError(t, err)
	require.Empty(t, c.Alerts.Rules)

	_, err = config.Load(write(t, ""), false, env(map[string]string{"ROBOT_AGENT_ALERTS_RULES": "[{nme: x}]"}))
	require.ErrorContains(t, err, "alerts.rules (from ROBOT_AGENT_ALERTS_RULES): want a YAML list")
}

func TestEveryOptionHasAnEnvVar(t *testing.T) {
	names := map[string]bool{}
	for _, v := range config.EnvVars() {
		names[v.Name] = true
	}
	for _, want := range []string{"ROBOT_AGENT_ROBOT_ID", "ROBOT_AGENT_MQTT_BROKER", "ROBOT_AGENT_MQTT_USERNAME",
		"ROBOT_AGENT_MQTT_PASSWORD", "ROBOT_AGENT_STATE_DIR", "ROBOT_AGENT_MODEL_DIRS", "ROBOT_AGENT_METRICS_INTERVAL",
		"ROBOT_AGENT_TOPIC_PREFIX", "ROBOT_AGENT_MQTT_TLS_CA_FILE", "ROBOT_AGENT_SESSIONS_MAX_CONCURRENT",
		"ROBOT_AGENT_METRICS_DISKS", "ROBOT_AGENT_LOG_LEVEL", "ROBOT_AGENT_ALERTS_RULES", "ROBOT_AGENT_SESSIONS_PIPELINES"} {
		require.True(t, names[want], want)
	}
}

func TestValidationNamesFieldAndRule(t *testing.T) {
	tests := []struct {
		yaml string
		env  map[string]string
		want string
	}{
		{yaml: "mqtt: {broker: http://x:1883}", want: `mqtt.broker: bad broker URL: "http://x:1883": unsupported scheme "http" (want tcp, mqtt, ssl, tls, mqtts, ws, wss)`},
		{yaml: "mqtt: {broker: 'tcp://'}", want: `mqtt.broker: bad broker URL: "tcp://" has no host`},
		{yaml: "mqtt: {broker: [tcp://a:1883, 'b:1883']}", want: `mqtt.broker: broker 2 of 2: bad broker URL: "b:1883"`},
		{yaml: "", env: map[string]string{"ROBOT_AGENT_MQTT_BROKER": "tcp://a:1883,ftp://b"}, want: `mqtt.broker: broker 2 of 2: bad broker URL: "ftp://b": unsupported scheme "ftp"`},
		{yaml: "mqtt: {broker: {a: b}}", want: "mqtt.broker must be a URL or a list of URLs"},
		{yaml: "mqtt: {reconnect_min: 2s, reconnect_fast_max: 1s}", want: "mqtt.reconnect_fast_max: must be at least 2s, got 1s"},
		{yaml: "robot_id: 'a/b'", want: `robot_id: "a/b" must match`},
		{yaml: "metrics: {interval: 500ms}", want: "metrics.interval: must be at least 1s, got 500ms"},
		{yaml: "log: {level: loud}", want: `log.level: unsupported level "loud"`},
		{yaml: "spool: {max_bytes: 1KiB}", want: "spool.max_bytes: must be at least 1MiB, got 1KiB"},
		{yaml: "mqtt: {tls: {cert_file: /x}}", want: "mqtt.tls.cert_file: cert_file and key_file must be set together"},
		{yaml: "mqtt: {tls: {ca_file: /nonexistent/ca.pem}}", want: `mqtt.tls.ca_file: cannot read "/nonexistent/ca.pem"`},
		{yaml: "alerts: {rules: [{name: x, metric: bogus}]}", want: `alerts.rules[0].metric: unknown metric "bogus"`},
		{yaml: "sessions: {max_concurrent: -1}", want: "sessions.max_concurrent: must be at least 1"},
		{yaml: "sessions: {pipelines: [{name: p, runner: exec}]}", want: "sessions.pipelines[0] (p).command"},
		{yaml: "commands: {max_age: 1s}", want: "commands.max_age: must be at least 10s, got 1s"},
		{yaml: "commands: {remember: 3}", want: "commands.remember: must be in [16, 1048576], got 3"},
		{yaml: "state_dir: relative", want: `state_dir: "relative" must be an absolute path`},
		{yaml: "", env: map[string]string{"ROBOT_AGENT_METRICS_INTERVAL": "soon"}, want: `metrics.interval (from ROBOT_AGENT_METRICS_INTERVAL): "soon" is not a Go duration`},
		{yaml: "mqtt: {brokr: tcp://x:1}", want: "field brokr not found"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, err := config.Load(write(t, tc.yaml), false, env(tc.env))
			require.Error(t, err)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestBrokerLists(t *testing.T) {
	for _, tc := range []struct {
		yaml, env string
		want      config.Brokers
	}{
		{yaml: "mqtt: {broker: tcp://a:1883}", want: config.Brokers{"tcp://a:1883"}},
		{yaml: "mqtt: {broker: 'tcp://a:1883, ssl://b:8883'}", want: config.Brokers{"tcp://a:1883", "ssl://b:8883"}},
		{yaml: "mqtt:\n  broker:\n    - tcp://a:1883\n    - mqtts://b:8883\n", want: config.Brokers{"tcp://a:1883", "mqtts://b:8883"}},
		{yaml: "mqtt: {broker: [tcp://a:1883]}", env: "ws://c/mqtt , tcp://d:1883", want: config.Brokers{"ws://c/mqtt", "tcp://d:1883"}},
	} {
		c, err := config.Load(write(t, tc.yaml), false, env(map[string]string{"ROBOT_AGENT_MQTT_BROKER": tc.env}))
		require.NoError(t, err, tc.yaml)
		require.Equal(t, tc.want, c.MQTT.Broker, tc.yaml)
		// config check prints it back loadable: one URL as a string, several as a list.
		b, err := yaml.Marshal(c)
		require.NoError(t, err)
		var back config.Config
		require.NoError(t, yaml.Unmarshal(b, &back))
		require.Equal(t, tc.want, back.MQTT.Broker)
	}
}

func TestMaskedHidesPassword(t *testing.T) {
	c := config.Defaults()
	c.MQTT.Username, c.MQTT.Password = "u", "hunter2"
	b, err := c.Masked()
	require.NoError(t, err)
	require.NotContains(t, string(b), "hunter2")
	require.Contains(t, string(b), `password: '***'`)
	require.Equal(t, "hunter2", c.MQTT.Password, "Masked must not change the config")
	// The masked output is itself a loadable config.
	var back config.Config
	require.NoError(t, yaml.Unmarshal(b, &back))
	require.Equal(t, c.MQTT.Broker, back.MQTT.Broker)
}
