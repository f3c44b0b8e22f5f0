// Package broker is the relay's embedded MQTT broker (mochi-mqtt), started
// when no external broker is configured so that one command runs the whole
// system. It listens only where configured (TCP, TLS, MQTT over WebSocket),
// authenticates robots from the config's users and confines each robot to
// its own topics: it may publish only under <prefix>/v1/robots/<id>/ and
// subscribe only to its own commands topic. The relay itself connects over
// TCP like any client (same code as for an external broker) with generated
// credentials that have full access.
package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/robotfleet/fleetlink/protocol"
)

// User is one broker account. A robot's username is its robot id.
type User struct {
	// Username: the robot id, or any name for an admin account.
	Username string `yaml:"username"`
	// Password in plain text, or "sha256:<hex>" of the password.
	Password string `yaml:"password"`
	// Admin grants full access (field engineers' tools, fleetctl). Default
	// false: a robot account confined to its own topics.
	Admin bool `yaml:"admin"`
}

// Options configures the embedded broker. Zero fields take the defaults
// named here.
type Options struct {
	// Listen is the plain TCP listener. Default 127.0.0.1:1883.
	Listen string
	// TLSListen adds an MQTT over TLS listener when set (needs TLS).
	// Default none.
	TLSListen string
	// TLS is the TLS listener's config (certificates). Default none.
	TLS *tls.Config
	// WSListen adds an MQTT over WebSocket listener when set. Default none.
	WSListen string
	// Users that may connect. Default none, which allows anonymous clients
	// with full access (logged as a warning).
	Users []User
	// Topics is the topic prefix the ACLs use. Default fleet.
	Topics protocol.Topics
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	srv      *mqtt.Server
	tcp      *listeners.TCP
	user     string // the relay's own account
	password string
}

// New starts the broker's listeners.
func New(o Options) (*Broker, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:1883"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TLSListen != "" && o.TLS == nil {
		return nil, fmt.Errorf("%w: tls_listen %q needs a certificate and key", ErrConfig, o.TLSListen)
	}
	h := &aclHook{topics: o.Topics, users: map[string]User{}}
	for i, u := range o.Users {
		if u.Username == "" || u.Password == "" {
			return nil, fmt.Errorf("%w: users[%d]: username and password are required", ErrConfig, i)
		}
		if !u.Admin {
			if err := protocol.CheckID("username (robot id)", u.Username); err != nil {
				return nil, fmt.Errorf("%w: users[%d]: %v", ErrConfig, i, err)
			}
		}
		h.users[u.Username] = u
	}
	b := &Broker{user: "fleet-relay-" + randHex(6), password: randHex(24)}
	h.internalUser, h.internalPass = b.user, b.password
	h.anonymous = len(o.Users) == 0
	log := o.Logger.With("component", "embedded-broker")
	if h.anonymous {
		log.Warn("embedded broker has no users configured: anonymous clients get full access", "listen", o.Listen)
	}
	// mochi logs every connection at info and every closed one as a warning; keep its errors.
	mlog := slog.New(&levelHandler{min: slog.LevelError, h: log.Handler()})
	b.srv = mqtt.New(&mqtt.Options{Logger: mlog, InlineClient: false})
	if err := b.srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	b.tcp = listeners.NewTCP(listeners.Config{ID: "tcp", Address: o.Listen})
	if err := b.srv.AddListener(b.tcp); err != nil {
		return nil, fmt.Errorf("%w: tcp %s: %v", ErrListen, o.Listen, err)
	}
	if o.TLSListen != "" {
		if err := b.srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: o.TLSListen, TLSConfig: o.TLS})); err != nil {
			b.srv.Close()
			return nil, fmt.Errorf("%w: tls %s: %v", ErrListen, o.TLSListen, err)
		}
	}
	if o.WSListen != "" {
		if err := b.srv.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: o.WSListen})); err != nil {
			b.srv.Close()
			return nil, fmt.Errorf("%w: ws %s: %v", ErrListen, o.WSListen, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		b.srv.Close()
		return nil, fmt.Errorf("%w: %v", ErrListen, err)
	}
	log.Info("embedded MQTT broker listening", "tcp", b.tcp.Address(), "tls", o.TLSListen, "ws", o.WSListen, "users", len(o.Users))
	return b, nil
}

// Addr returns the TCP listener's address (host:port, the real port when
// Listen asked for port 0).
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL returns tcp://Addr().
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Credentials returns the relay's own account, valid for this process only.
func (b *Broker) Credentials() (username, password string) { return b.user, b.password }

// Close stops the broker.
func (b *Broker) Close() error { return b.srv.Close() }

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// aclHook authenticates clients and confines robots to their own topics.
type aclHook struct {
	mqtt.HookBase
	topics                     protocol.Topics
	users                      map[string]User // read-only after New
	internalUser, internalPass string
	anonymous                  bool
}

func (h *aclHook) ID() string { return "fleet-acl" }

func (h *aclHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	if user == h.internalUser {
		return subtle.ConstantTimeCompare([]byte(pass), []byte(h.internalPass)) == 1
	}
	if h.anonymous {
		return true
	}
	u, ok := h.users[user]
	return ok && checkPassword(u.Password, pass)
}

func checkPassword(want, got string) bool {
	if hexSum, ok := strings.CutPrefix(want, "sha256:"); ok {
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare([]byte(strings.ToLower(hexSum)), []byte(hex.EncodeToString(sum[:]))) == 1
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	if user == h.internalUser || h.anonymous {
		return true
	}
	u, ok := h.users[user]
	if !ok {
		return false
	}
	if u.Admin {
		return true
	}
	own := h.topics.Commands(user)
	if !write {
		return topic == own // subscribe: only its own commands, no wildcards
	}
	if topic == own || strings.ContainsAny(topic, "+#") {
		return false
	}
	return strings.HasPrefix(topic, strings.TrimSuffix(h.topics.RobotTree(user), "#"))
}
