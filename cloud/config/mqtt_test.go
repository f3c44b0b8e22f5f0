package config_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
)

// TestBrokerListAndClientID: FLEET_RELAY_MQTT_BROKER takes comma-separated
// URLs, mqtt.brokers a YAML list (after mqtt.broker), and
// FLEET_RELAY_MQTT_CLIENT_ID the persistent session's client id.
func TestBrokerListAndClientID(t *testing.T) {
	c, err := config.Load("", env(map[string]string{
		config.EnvMQTTBroker: "tcp://a:1883, tcp://b:1883", config.EnvMQTTClientID: "relay-eu-1"}))
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://a:1883", "tcp://b:1883"}, c.MQTT.BrokerList())
	require.True(t, c.MQTT.External())
	require.Equal(t, "relay-eu-1", c.MQTT.ClientID)
	require.NoError(t, c.Validate())

	path := filepath.Join(t.TempDir(), "relay.yaml")
	require.NoError(t, os.WriteFile(path, []byte("mqtt:\n  broker: tcp://a:1883\n  brokers:\n    - tcp://b:1883\n    - ssl://c:8883\n"), 0o600))
	c, err = config.Load(path, env(nil))
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://a:1883", "tcp://b:1883", "ssl://c:8883"}, c.MQTT.BrokerList())
	require.NoError(t, c.Validate())

	c = config.Default()
	require.False(t, c.MQTT.External(), "no broker: the embedded one")
	c.MQTT.Brokers = []string{"tcp://a:1883", "b:1883"}
	require.ErrorContains(t, c.Validate(), "mqtt.broker: must be a URL")
}

// TestHTTPOptions: the HTTP edge's options are validated by name.
func TestHTTPOptions(t *testing.T) {
	for field, edit := range map[string]func(*config.Config){
		"http.idle_timeout":       func(c *config.Config) { c.HTTP.IdleTimeout = 0 },
		"http.body_timeout":       func(c *config.Config) { c.HTTP.BodyTimeout = -1 },
		"http.max_conns_per_addr": func(c *config.Config) { c.HTTP.MaxConnsPerAddr = 0 },
		"prometheus.listen":       func(c *config.Config) { c.Prometheus.Listen = "9091" },
	} {
		c := config.Default()
		edit(&c)
		require.ErrorContains(t, c.Validate(), field)
	}
}
