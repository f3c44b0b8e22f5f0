// Package natstest starts a real NATS cluster for tests: Debian's
// nats-server, one child process per node, JetStream and MQTT on every node,
// cluster routes between them, each port free on loopback, stopped by
// t.Cleanup. It uses the accounts, users and MQTT permissions that
// configs/nats-cluster/ ships, so the tests check the documented deployment.
// A missing nats-server fails the test (never skips): `make test` installs it.
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/internal/brokertest"
)

// Passwords of the users in configs/nats-cluster/accounts.conf.
const (
	RelayUser     = "relay"
	RelayPassword = "change-me-relay"
	CtlUser       = "fleetctl"
	CtlPassword   = "change-me-fleetctl"
)

// RobotPassword is the password of robot account id in the shipped accounts.conf.
func RobotPassword(id string) string { return "change-me-" + id }

// Node is one nats-server of a Cluster.
type Node struct {
	Name       string
	ClientPort int // NATS clients
	MQTTPort   int
	RoutePort  int
	dir        string
	log        string

	mu  sync.Mutex
	cmd *exec.Cmd
	t   testing.TB
}

// Cluster is a running NATS cluster.
type Cluster struct {
	Nodes []*Node
}

// MQTTURL is the node's MQTT listener as a broker URL.
func (n *Node) MQTTURL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", n.MQTTPort) }

// NATSURL is the node's NATS client URL.
func (n *Node) NATSURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort) }

// MQTTURLs is every node's MQTT URL, comma-separated, for broker lists.
func (c *Cluster) MQTTURLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.MQTTURL())
	}
	return strings.Join(us, ",")
}

// NATSURLs is every node's NATS URL, comma-separated.
func (c *Cluster) NATSURLs() string {
	var us []string
	for _, n := range c.Nodes {
		us = append(us, n.NATSURL())
	}
	return strings.Join(us, ",")
}

// Binary finds nats-server or fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"nats-server", "/usr/bin/nats-server", "/usr/sbin/nats-server"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("nats-server is not installed (Debian package nats-server; `make test` installs it)")
	return ""
}

// configsDir is configs/nats-cluster of this repository.
func configsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "configs", "nats-cluster")
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ps []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		ls = append(ls, l)
		ps = append(ps, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ps
}

// StartCluster starts n nodes (3 for a real cluster; 1 is a single server
// with the same accounts) and waits until every node's MQTT listener
// accepts connections and JetStream has a meta leader.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary(t)
	accounts, err := os.ReadFile(filepath.Join(configsDir(), "accounts.conf"))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	ports := freePorts(t, 4*n)
	c := &Cluster{}
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[4*i+2]))
	}
	root := t.TempDir()
	for i := 0; i < n; i++ {
		node := &Node{
			Name: fmt.Sprintf("nats-%d", i+1), ClientPort: ports[4*i], MQTTPort: ports[4*i+1],
			RoutePort: ports[4*i+2], dir: filepath.Join(root, fmt.Sprintf("n%d", i+1)), t: t,
		}
		if err := os.MkdirAll(node.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cluster := ""
		if n > 1 {
			cluster = fmt.Sprintf("cluster {\n  name: fleet\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
				node.RoutePort, strings.Join(routes, ", "))
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }
mqtt { listen: 127.0.0.1:%d, ack_wait: "5s", max_ack_pending: 1024 }
%s
include ./accounts.conf
`, node.Name, node.ClientPort, ports[4*i+3], filepath.Join(node.dir, "js"), node.MQTTPort, cluster)
		if err := os.WriteFile(filepath.Join(node.dir, "node.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(node.dir, "accounts.conf"), accounts, 0o644); err != nil {
			t.Fatal(err)
		}
		node.log = filepath.Join(node.dir, "nats.log")
		c.Nodes = append(c.Nodes, node)
	}
	for _, node := range c.Nodes {
		node.start(t, bin)
	}
	t.Cleanup(func() {
		for _, node := range c.Nodes {
			node.Kill()
		}
		if t.Failed() {
			for _, node := range c.Nodes {
				if b, err := os.ReadFile(node.log); err == nil {
					t.Logf("--- %s log (tail) ---\n%s", node.Name, tail(string(b), 4000))
				}
			}
		}
	})
	for _, node := range c.Nodes {
		brokertest.WaitPort(t, fmt.Sprintf("127.0.0.1:%d", node.MQTTPort), 20*time.Second)
	}
	c.WaitJetStream(t, 30*time.Second)
	return c
}

func (n *Node) start(t testing.TB, bin string) {
	t.Helper()
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(n.dir, "node.conf"))
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", n.Name, err)
	}
	f.Close()
	n.mu.Lock()
	n.cmd = cmd
	n.mu.Unlock()
}

// Kill stops the node with SIGKILL (a crash); its JetStream files stay.
func (n *Node) Kill() {
	n.mu.Lock()
	cmd := n.cmd
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
}

// Restart starts a killed node again with the same ports and store.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.start(t, Binary(t))
	brokertest.WaitPort(t, fmt.Sprintf("127.0.0.1:%d", n.MQTTPort), 20*time.Second)
}

// Running reports whether the node's process is up.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// WaitJetStream waits until JetStream is usable through every running node:
// MQTT clients are refused until the account's MQTT streams can be created,
// which needs a JetStream meta leader in a cluster.
func (c *Cluster) WaitJetStream(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		for {
			err := mqttPing(n.MQTTPort)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("natstest: %s not ready for MQTT after %s: %v", n.Name, timeout, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// mqttPing sends a minimal MQTT 3.1.1 CONNECT as the fleetctl user and
// expects CONNACK return code 0.
func mqttPing(port int) error {
	conn, code, err := RawConnect(port, fmt.Sprintf("natstest-%d", time.Now().UnixNano()), CtlUser, CtlPassword, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	if code != 0 {
		return fmt.Errorf("CONNACK return code %d", code)
	}
	_, _ = conn.Write([]byte{0xE0, 0}) // DISCONNECT
	return nil
}

// Will is a Last Will for RawConnect.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// RawConnect opens a TCP connection, sends an MQTT 3.1.1 CONNECT (clean
// session, keepalive 10 s, optional Will) and returns the connection and the
// CONNACK return code. Closing the connection without DISCONNECT is what a
// dropped robot looks like to the broker: its Will fires.
func RawConnect(port int, clientID, user, pass string, will *Will) (net.Conn, byte, error) {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return nil, 0, err
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var body []byte
	str := func(s []byte) { body = append(body, byte(len(s)>>8), byte(len(s))); body = append(body, s...) }
	str([]byte("MQTT"))
	flags := byte(0xC2) // user, password, clean session
	if will != nil {
		flags |= 0x04 | will.QoS<<3
		if will.Retain {
			flags |= 0x20
		}
	}
	body = append(body, 4, flags, 0, 10)
	str([]byte(clientID))
	if will != nil {
		str([]byte(will.Topic))
		str(will.Payload)
	}
	str([]byte(user))
	str([]byte(pass))
	pkt := []byte{0x10}
	for l := len(body); ; {
		b := byte(l % 128)
		l /= 128
		if l > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if l == 0 {
			break
		}
	}
	pkt = append(pkt, body...)
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, 0, err
	}
	ack := make([]byte, 4)
	if _, err := ioReadFull(conn, ack); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("no CONNACK: %w", err)
	}
	if ack[0] != 0x20 {
		conn.Close()
		return nil, 0, fmt.Errorf("not a CONNACK: % x", ack)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, ack[3], nil
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
