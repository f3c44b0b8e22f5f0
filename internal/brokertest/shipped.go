package brokertest

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Paths the shipped Mosquitto config names, rewritten by Shipped.
const (
	shippedPasswd = "/etc/mosquitto/fleet.passwd"
	shippedACL    = "/etc/mosquitto/fleet.acl"
)

// Mosquitto 2 options that belong to a listener: in the global file they
// would create a default listener on port 1883 and apply only there.
var listenerOptions = []string{"listener", "port", "bind_address", "bind_interface", "protocol", "mount_point",
	"use_username_as_clientid", "max_connections", "maximum_qos", "max_topic_alias", "http_dir", "socket_domain"}

// Shipped returns Options that run Mosquitto as configs/mosquitto ships it:
// conf.d/fleet.conf as the access settings (its password file pointing at
// passwdFile, its ACL at a copy of fleet.acl) and the options of the first
// listener of conf.d/listeners.conf (bar TLS files) on every test listener.
func Shipped(t testing.TB, passwdFile string) Options {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "..", "configs", "mosquitto")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("shipped mosquitto config: %v", err)
		}
		return string(b)
	}
	conf, acl, listeners := read("conf.d/fleet.conf"), read("fleet.acl"), read("conf.d/listeners.conf")
	for _, line := range strings.Split(conf, "\n") {
		for _, opt := range listenerOptions {
			if f := strings.Fields(line); len(f) > 0 && f[0] == opt {
				t.Fatalf("conf.d/fleet.conf sets listener option %q: put it under each listener in listeners.conf", opt)
			}
		}
	}
	aclFile := filepath.Join(t.TempDir(), "fleet.acl")
	if err := os.WriteFile(aclFile, []byte(acl), 0o600); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{shippedPasswd: passwdFile, shippedACL: aclFile} {
		if !strings.Contains(conf, from) {
			t.Fatalf("shipped mosquitto config no longer names %s", from)
		}
		conf = strings.ReplaceAll(conf, from, to)
	}
	return Options{Config: conf, ListenerConfig: firstListenerOptions(listeners)}
}

// firstListenerOptions returns the option lines under the first listener
// line, up to a blank line, without certificate and TLS settings.
func firstListenerOptions(conf string) string {
	var out []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "listener "):
			if in {
				return strings.Join(out, "\n")
			}
			in = true
		case !in || strings.HasPrefix(line, "#"):
		case line == "":
			return strings.Join(out, "\n")
		case strings.HasPrefix(line, "certfile"), strings.HasPrefix(line, "keyfile"), strings.HasPrefix(line, "cafile"),
			strings.HasPrefix(line, "tls_"), strings.HasPrefix(line, "require_certificate"):
		default:
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
