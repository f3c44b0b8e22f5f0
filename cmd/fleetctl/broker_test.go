package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// closedURL is a broker URL nothing listens on.
func closedURL(t *testing.T) string {
	return fmt.Sprintf("tcp://127.0.0.1:%d", brokertest.FreePort(t))
}

// loadConfig resolves the broker options of args as a command would.
func loadConfig(t *testing.T, args ...string) (*mqttConfig, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	mc := addMQTTFlags(fs)
	require.NoError(t, fs.Parse(args))
	return mc, mc.load(io.Discard)
}

// isolate keeps the developer's own FLEETCTL_* and config file out of a test.
func isolate(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "FLEETCTL_") {
			t.Setenv(k, "")
		}
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
}

// TestBrokerOptionsPrecedence: a flag beats its FLEETCTL_* variable, which
// beats the config file, which beats the default; the file takes a broker
// list as YAML or as one comma-separated string.
func TestBrokerOptionsPrecedence(t *testing.T) {
	isolate(t)
	mc, err := loadConfig(t)
	require.NoError(t, err)
	require.Equal(t, []string{defaultBroker}, mc.Brokers)
	require.Equal(t, "fleet", mc.Topics.Prefix())
	require.Equal(t, defaultConnectTimeout, mc.ConnectTimeout)

	cfg := writeFile(t, "fleetctl.yaml", []byte(`
topic_prefix: acme/prod
mqtt:
  broker: [tcp://a:1883, "ws://b:9001/mqtt"]
  username: eng
  password: from-file
  connect_timeout: 3s
  reconnect_max: 2s
  tls: {server_name: broker.test}
`))
	mc, err = loadConfig(t, "--config", cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://a:1883", "ws://b:9001/mqtt"}, mc.Brokers)
	require.Equal(t, "acme/prod", mc.Topics.Prefix())
	require.Equal(t, "eng", mc.Username)
	require.Equal(t, "from-file", mc.Password)
	require.Equal(t, 3*time.Second, mc.ConnectTimeout)
	require.Equal(t, 2*time.Second, mc.Reconnect.Max)
	require.Equal(t, 500*time.Millisecond, mc.Reconnect.Min, "the default")
	require.Equal(t, "broker.test", mc.TLS.ServerName)

	t.Setenv("FLEETCTL_CONFIG", cfg) // the file from the environment
	t.Setenv("FLEETCTL_BROKER", "tcp://env-a:1883, tcp://env-b:1883")
	t.Setenv("FLEETCTL_PASSWORD", "from-env")
	t.Setenv("FLEETCTL_CONNECT_TIMEOUT", "4s")
	mc, err = loadConfig(t)
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://env-a:1883", "tcp://env-b:1883"}, mc.Brokers)
	require.Equal(t, "from-env", mc.Password)
	require.Equal(t, "eng", mc.Username, "the file still fills what the environment does not")
	require.Equal(t, 4*time.Second, mc.ConnectTimeout)

	mc, err = loadConfig(t, "--broker", "tcp://flag:1883", "--password", "from-flag", "--connect-timeout", "5s", "--prefix", "x")
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://flag:1883"}, mc.Brokers)
	require.Equal(t, "from-flag", mc.Password)
	require.Equal(t, 5*time.Second, mc.ConnectTimeout)
	require.Equal(t, "x", mc.Topics.Prefix())

	// The default file, when it exists.
	isolate(t)
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	require.NoError(t, os.MkdirAll(filepath.Join(home, "fleetctl"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(home, "fleetctl", "config.yaml"), []byte("mqtt: {broker: 'tcp://c:1,tcp://d:2'}\n"), 0o600))
	mc, err = loadConfig(t)
	require.NoError(t, err)
	require.Equal(t, []string{"tcp://c:1", "tcp://d:2"}, mc.Brokers)
}

// TestBrokerOptionErrors: every bad option is refused with exit 2 and a
// message naming the option and where it came from.
func TestBrokerOptionErrors(t *testing.T) {
	isolate(t)
	badFile := writeFile(t, "bad.yaml", []byte("mqtt: {brokr: tcp://x:1}\n"))
	badList := writeFile(t, "list.yaml", []byte("mqtt: {broker: [tcp://ok:1, 'http://x:2']}\n"))
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--broker", "http://x:1883"}, nil, `--broker: bad broker URL: "http://x:1883": unsupported scheme "http" (want tcp, mqtt, ssl, tls, mqtts, ws, wss)`},
		{[]string{"--broker", "tcp://a:1,tcp://"}, nil, `--broker: broker 2 of 2: bad broker URL: "tcp://" has no host`},
		{[]string{"--broker", " , "}, nil, "--broker: no broker URL"},
		{nil, map[string]string{"FLEETCTL_BROKER": "ftp://x:1"}, `FLEETCTL_BROKER: bad broker URL: "ftp://x:1": unsupported scheme "ftp"`},
		{[]string{"--config", badFile}, nil, "field brokr not found"},
		{[]string{"--config", badList}, nil, `config mqtt.broker: broker 2 of 2: bad broker URL: "http://x:2": unsupported scheme "http"`},
		{[]string{"--config", "/nonexistent/fleetctl.yaml"}, nil, "no such file"},
		{[]string{"--password", "p"}, nil, "--password: a password needs a username"},
		{nil, map[string]string{"FLEETCTL_CONNECT_TIMEOUT": "soon"}, `FLEETCTL_CONNECT_TIMEOUT: want a positive duration such as 5s, got "soon"`},
		{[]string{"--connect-timeout", "0s"}, nil, "--connect-timeout must be positive"},
		{[]string{"--tls-cert-file", "/x.pem"}, nil, "cert file and key file must be given together"},
		{[]string{"--broker", "ssl://b:8883", "--tls-ca-file", "/nonexistent/ca.pem"}, nil, "bad TLS setting: ca_file: open /nonexistent/ca.pem"},
		{nil, map[string]string{"FLEETCTL_TLS_INSECURE_SKIP_VERIFY": "maybe"}, `FLEETCTL_TLS_INSECURE_SKIP_VERIFY: want true or false, got "maybe"`},
		{[]string{"--prefix", "a/+"}, nil, "--prefix: "},
	}
	for _, tt := range tests {
		name := strings.Join(tt.args, " ")
		for k, v := range tt.env {
			name += k + "=" + v
		}
		t.Run(name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, _, errOut := runFleetctl(t, append([]string{"robots"}, tt.args...)...)
			require.Equal(t, 2, code, errOut)
			require.Contains(t, errOut, tt.want)
		})
	}
}

// TestFailoverToSecondBroker: with the first broker of the list down,
// commands reach the robot through the second and say so on stderr; the
// list comes from --broker, FLEETCTL_BROKER or the config file alike.
func TestFailoverToSecondBroker(t *testing.T) {
	isolate(t)
	broker := brokertest.StartMochi(t)
	startFakeRobot(t, broker.URL(), "r-1")
	down := closedURL(t)
	list := down + "," + broker.URL()

	code, out, errOut := runFleetctl(t, "ping", "r-1", "--broker", list, "--json")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, broker.URL(), decodeJSON(t, out)["broker"])
	require.Contains(t, errOut, "fleetctl: connected to "+broker.URL()+"; failed before it: "+down)

	t.Setenv("FLEETCTL_BROKER", list)
	code, out, errOut = runFleetctl(t, "robots", "--wait", "300ms")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "r-1")

	t.Setenv("FLEETCTL_BROKER", "")
	cfg := writeFile(t, "f.yaml", []byte(fmt.Sprintf("mqtt:\n  broker:\n    - %s\n    - %s\n", down, broker.URL())))
	code, _, errOut = runFleetctl(t, "send", "r-1", "ping", "--config", cfg)
	require.Equal(t, 0, code, errOut)

	// Every broker down: the error names each one's failure.
	other := closedURL(t)
	code, _, errOut = runFleetctl(t, "ping", "r-1", "--broker", down+","+other, "--connect-timeout", "1s")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to "+down+","+other+": "+down+": ")
	require.Contains(t, errOut, "; "+other+": ")
}

// TestWatchFailsOver: watch on a list of two Mosquittos keeps printing
// after the one it was connected to stops: it reconnects to the other.
func TestWatchFailsOver(t *testing.T) {
	isolate(t)
	a, b := brokertest.StartMosquitto(t), brokertest.StartMosquitto(t)
	w := startWatch(t, "--broker", a.URL()+","+b.URL(), "--count", "2", "r-1")
	tp := protocol.Topics{}
	pa := dial(t, a.URL(), "robot-on-a")
	publish(t, pa, tp.Notifications("r-1"), encode(t, protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "via a"}), 1), false)
	require.Eventually(t, func() bool { return strings.Contains(w.stdout.String(), "via a") }, 10*time.Second, 20*time.Millisecond)

	a.Stop()
	require.Eventually(t, func() bool { return strings.Contains(w.stderr.String(), "connected to "+b.URL()) }, 60*time.Second, 50*time.Millisecond, w.stderr.String())
	require.Eventually(t, func() bool { return strings.Count(w.stderr.String(), "watching ") == 2 }, 10*time.Second, 20*time.Millisecond, "resubscribed on b")
	pb := dial(t, b.URL(), "robot-on-b")
	publish(t, pb, tp.Notifications("r-1"), encode(t, protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: "via b"}), 2), false)
	require.NoError(t, w.wait(t))
	require.Contains(t, w.stdout.String(), "via b")
	require.Contains(t, w.stderr.String(), "watching fleet/v1/robots/r-1/# on "+b.URL())
}

// makeTLSFiles writes a CA, a server certificate for broker.test and a client
// certificate, each as NAME.pem and NAME.key, into a new directory.
func makeTLSFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var caCert *x509.Certificate
	var caKey *ecdsa.PrivateKey
	for i, name := range []string{"ca", "server", "client"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		parent, parentKey := caCert, caKey
		switch name {
		case "ca":
			tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
			parent, parentKey = tmpl, key
		case "server":
			tmpl.DNSNames = []string{"broker.test"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
		if name == "ca" {
			caCert, err = x509.ParseCertificate(der)
			require.NoError(t, err)
			caKey = key
		}
	}
	return dir
}

// TestMutualTLSAndPassword: a Mosquitto that wants TLS with a client
// certificate and a password; fleetctl reaches it with the CA, cert and
// key from flags, from FLEETCTL_* and from the config file, and is refused
// without the client certificate.
func TestMutualTLSAndPassword(t *testing.T) {
	isolate(t)
	dir := makeTLSFiles(t)
	pw := filepath.Join(dir, "passwd")
	require.NoError(t, os.WriteFile(pw, nil, 0o600))
	out, err := runMosquittoPasswd(pw, "eng", "s3cret")
	require.NoError(t, err, "mosquitto_passwd: %s", out)
	port := brokertest.FreePort(t)
	// "user root": as root, Mosquitto otherwise drops to user mosquitto,
	// which cannot read the keys in the test's private temp dir.
	m := brokertest.StartMosquitto(t, brokertest.Options{Extra: fmt.Sprintf("user root\nallow_anonymous false\npassword_file %s\n"+
		"listener %d 127.0.0.1\ncafile %s/ca.pem\ncertfile %s/server.pem\nkeyfile %s/server.key\nrequire_certificate true\n", pw, port, dir, dir, dir)})
	_ = m
	url := fmt.Sprintf("ssl://127.0.0.1:%d", port)

	flags := []string{"--broker", url, "--tls-ca-file", dir + "/ca.pem", "--tls-cert-file", dir + "/client.pem", "--tls-key-file", dir + "/client.key",
		"--tls-server-name", "broker.test", "--username", "eng", "--password", "s3cret", "--wait", "200ms"}
	code, _, errOut := runFleetctl(t, append([]string{"robots"}, flags...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no robots found on "+url, "connected: only the fleet is empty")

	code, _, errOut = runFleetctl(t, append([]string{"robots"}, flags[:len(flags)-6]...)...) // no username and password
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to "+url)

	for k, v := range map[string]string{"FLEETCTL_BROKER": url, "FLEETCTL_TLS_CA_FILE": dir + "/ca.pem", "FLEETCTL_TLS_CERT_FILE": dir + "/client.pem",
		"FLEETCTL_TLS_KEY_FILE": dir + "/client.key", "FLEETCTL_TLS_SERVER_NAME": "broker.test", "FLEETCTL_USERNAME": "eng", "FLEETCTL_PASSWORD": "s3cret"} {
		t.Setenv(k, v)
	}
	code, _, errOut = runFleetctl(t, "robots", "--wait", "200ms")
	require.Contains(t, errOut, "no robots found on "+url)
	require.Equal(t, 1, code)
	for _, k := range []string{"FLEETCTL_BROKER", "FLEETCTL_TLS_CA_FILE", "FLEETCTL_TLS_CERT_FILE", "FLEETCTL_TLS_KEY_FILE", "FLEETCTL_TLS_SERVER_NAME", "FLEETCTL_USERNAME", "FLEETCTL_PASSWORD"} {
		t.Setenv(k, "")
	}

	cfg := writeFile(t, "tls.yaml", []byte(fmt.Sprintf("mqtt:\n  broker: %s\n  username: eng\n  password: s3cret\n  tls:\n    ca_file: %s/ca.pem\n    cert_file: %s/client.pem\n    key_file: %s/client.key\n    server_name: broker.test\n", url, dir, dir, dir)))
	code, _, errOut = runFleetctl(t, "robots", "--config", cfg, "--wait", "200ms")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no robots found on "+url)

	// Without the client certificate the broker refuses.
	code, _, errOut = runFleetctl(t, "robots", "--config", cfg, "--tls-cert-file", "", "--tls-key-file", "", "--connect-timeout", "2s")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "connect to "+url)
}

func runMosquittoPasswd(file, user, password string) ([]byte, error) {
	return exec.Command("mosquitto_passwd", "-b", file, user, password).CombinedOutput()
}

// TestConfigExampleIsTheDefaults: the sample config parses strictly, and
// what it sets is exactly what fleetctl uses with no config at all.
func TestConfigExampleIsTheDefaults(t *testing.T) {
	isolate(t)
	code, sample, errOut := runFleetctl(t, "config", "example")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, exampleConfig, sample)
	def, err := loadConfig(t)
	require.NoError(t, err)
	fromSample, err := loadConfig(t, "--config", writeFile(t, "sample.yaml", []byte(sample)))
	require.NoError(t, err)
	require.Equal(t, def.Brokers, fromSample.Brokers)
	require.Equal(t, def.Topics, fromSample.Topics)
	require.Equal(t, def.ConnectTimeout, fromSample.ConnectTimeout)
	require.Equal(t, def.KeepAlive, fromSample.KeepAlive)
	require.Equal(t, def.Reconnect, fromSample.Reconnect)
	require.Equal(t, def.TLS, fromSample.TLS)
	require.Equal(t, "config mqtt.broker", fromSample.Sources["mqtt.broker"])

	// Every option of the file is in the sample, commented.
	for _, key := range []string{"topic_prefix:", "broker:", "username:", "password:", "connect_timeout:", "keep_alive:", "reconnect_min:", "reconnect_fast_max:", "reconnect_fast_for:", "reconnect_max:",
		"ca_file:", "cert_file:", "key_file:", "server_name:", "insecure_skip_verify:"} {
		require.Contains(t, sample, key)
	}
}

// TestConfigCheck prints the options in effect and where each came from,
// the password masked.
func TestConfigCheck(t *testing.T) {
	isolate(t)
	cfg := writeFile(t, "c.yaml", []byte("mqtt: {username: eng, password: s3cret, keep_alive: 5s}\n"))
	t.Setenv("FLEETCTL_BROKER", "tcp://a:1,tcp://b:2")
	code, out, errOut := runFleetctl(t, "config", "check", "--config", cfg, "--prefix", "acme")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, "s3cret")
	require.Regexp(t, `(?m)^mqtt.broker +tcp://a:1,tcp://b:2 +FLEETCTL_BROKER$`, out)
	require.Regexp(t, `(?m)^mqtt.password +\*\*\* +config mqtt.password$`, out)
	require.Regexp(t, `(?m)^topic_prefix +acme +--prefix$`, out)
	require.Regexp(t, `(?m)^mqtt.keep_alive +5s +config mqtt.keep_alive$`, out)
	require.Regexp(t, `(?m)^mqtt.connect_timeout +10s +default$`, out)

	require.Contains(t, errOut, "fleetctl: warning: "+cfg+" holds a password and others may read it (mode 0644); chmod 600 it")
	require.NoError(t, os.Chmod(cfg, 0o600))
	code, out, errOut = runFleetctl(t, "config", "check", "--config", cfg, "--json")
	require.NotContains(t, errOut, "others may read it")
	require.Equal(t, 0, code, errOut)
	m := decodeJSON(t, out)
	require.Equal(t, []string{"brokers", "connect_timeout", "keep_alive", "password", "reconnect_fast_for", "reconnect_fast_max", "reconnect_max", "reconnect_min", "sources", "tls", "topic_prefix", "username"}, keysOf(t, m))
	require.Equal(t, "***", m["password"])
	require.Equal(t, []any{"tcp://a:1", "tcp://b:2"}, m["brokers"])
}
