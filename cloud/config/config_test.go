package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// TestExampleIsTheDefault: the sample config documents the defaults exactly,
// and configs/relay.example.yaml is the same file.
func TestExampleIsTheDefault(t *testing.T) {
	var c config.Config
	require.NoError(t, config.Parse(config.Example, &c))
	require.Equal(t, config.Default(), c)
	d := config.Default()
	require.NoError(t, d.Validate())
	onDisk, err := os.ReadFile("../../configs/relay.example.yaml")
	require.NoError(t, err)
	require.Equal(t, string(config.Example), string(onDisk), "configs/relay.example.yaml must equal cloud/config/relay.example.yaml")
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte("listen: 127.0.0.1:9000\nws:\n  heartbeat: 5s\n"), 0o600))
	c, err := config.Load(path, env(map[string]string{
		config.EnvListen: "127.0.0.1:9100", config.EnvMQTTBroker: "tcp://b:1883",
		config.EnvEmbeddedListen: "127.0.0.1:1999", config.EnvAuthSecret: "s", config.EnvTopicPrefix: "acme/fleet",
	}))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9100", c.Listen, "env over file")
	require.Equal(t, "tcp://b:1883", c.MQTT.Broker)
	require.Equal(t, "127.0.0.1:1999", c.Embedded.Listen)
	require.Equal(t, "s", c.Auth.Secret)
	require.Equal(t, "acme/fleet", c.TopicPrefix)
	require.Equal(t, "5s", c.WS.Heartbeat.String(), "file over defaults")
	require.Equal(t, config.Default().WS.QueueBytes, c.WS.QueueBytes)

	c, err = config.Load(path, env(map[string]string{config.EnvListen: ""}))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:9000", c.Listen, "an empty variable overrides nothing")

	require.NoError(t, os.WriteFile(path, []byte("lisen: x\n"), 0o600))
	_, err = config.Load(path, env(nil))
	require.ErrorIs(t, err, config.ErrRead)
	require.ErrorContains(t, err, "lisen", "unknown fields are named")

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	c, err = config.Load(path, env(nil))
	require.NoError(t, err, "an empty file is no overrides")
	require.Equal(t, config.Default(), c)
}

func TestValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *config.Config)
		want   string // "" = valid
	}{
		{"defaults", func(*config.Config) {}, ""},
		{"bad listen", func(c *config.Config) { c.Listen = "8080" }, "listen: must be host:port"},
		{"auth off on 0.0.0.0", func(c *config.Config) { c.Listen = "0.0.0.0:8080" }, "auth: is off"},
		{"auth off on 0.0.0.0, insecure", func(c *config.Config) { c.Listen = "0.0.0.0:8080"; c.InsecureNoAuth = true }, ""},
		{"auth on on 0.0.0.0", func(c *config.Config) { c.Listen = "0.0.0.0:8080"; c.Auth.Secret = "x" }, ""},
		{"localhost is loopback", func(c *config.Config) { c.Listen = "localhost:8080" }, ""},
		{"bad prefix", func(c *config.Config) { c.TopicPrefix = "a/#" }, "topic_prefix"},
		{"broker not a URL", func(c *config.Config) { c.MQTT.Broker = "host:1883" }, "mqtt.broker: must be a URL"},
		{"tls half", func(c *config.Config) { c.TLS.CertFile = "c.pem" }, "tls: cert_file and key_file"},
		{"robot user with bad id", func(c *config.Config) { c.Embedded.Users = append(c.Embedded.Users, userOf("a b", "p")) }, "embedded_mqtt.users[0].username"},
		{"user without password", func(c *config.Config) { c.Embedded.Users = append(c.Embedded.Users, userOf("r-1", "")) }, "embedded_mqtt.users[0].password"},
		{"anonymous embedded broker off loopback", func(c *config.Config) { c.Embedded.Listen = "0.0.0.0:1883" }, "embedded_mqtt.users: no users are configured"},
		{"anonymous ws listener off loopback", func(c *config.Config) { c.Embedded.WSListen = ":8083" }, `the ws listener ":8083" is not on loopback`},
		{"anonymous off loopback, named insecure", func(c *config.Config) {
			c.Embedded.Listen = "0.0.0.0:1883"
			c.Embedded.InsecureAnonymous = []string{"tcp"}
		}, ""},
		{"embedded broker off loopback with users", func(c *config.Config) {
			c.Embedded.Listen = "0.0.0.0:1883"
			c.Embedded.Users = append(c.Embedded.Users, userOf("r-1", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"))
		}, ""},
		{"unknown insecure listener", func(c *config.Config) { c.Embedded.InsecureAnonymous = []string{"http"} }, "embedded_mqtt.insecure_anonymous[0]"},
		{"malformed password hash", func(c *config.Config) { c.Embedded.Users = append(c.Embedded.Users, userOf("r-1", "$7$101$x")) }, "embedded_mqtt.users[0].password: malformed $7$"},
		{"missing password file", func(c *config.Config) { c.Embedded.PasswordFile = "/nonexistent/passwd" }, "embedded_mqtt.password_file"},
		{"packet size too small", func(c *config.Config) { c.Embedded.Limits.MaxPacketSize = 100 }, "embedded_mqtt.limits.max_packet_size: must be"},
		{"short static token", func(c *config.Config) { c.Auth.StaticTokens = append(c.Auth.StaticTokens, tokenOf("short")) }, "auth.static_tokens[0].token"},
		{"queue too small", func(c *config.Config) { c.WS.QueueBytes = 10 }, "ws.queue_bytes: must be >= 4096"},
		{"zero heartbeat", func(c *config.Config) { c.WS.Heartbeat = 0 }, "ws.heartbeat: must be > 0"},
		{"backoff order", func(c *config.Config) { c.MQTT.ReconnectMax = 1 }, "mqtt.reconnect_max"},
		{"log level", func(c *config.Config) { c.Log.Level = "loud" }, "log.level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Default()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, config.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// Every violation is reported, one per line.
	c := config.Default()
	c.WS.Heartbeat, c.Hub.RingEvents = 0, 0
	require.Len(t, strings.Split(c.Validate().Error(), "\n"), 2)
}
