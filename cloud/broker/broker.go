// Package broker is the relay's embedded MQTT broker (mochi-mqtt), started
// when no external broker is configured so that one command runs the whole
// system. It listens only where configured (TCP, TLS, MQTT over WebSocket
// with an Origin check) and enforces what a stolen robot credential may do:
// a robot account connects only with its own client id and a Will on its
// own status, publishes only the spec §3 topics of its own robot (retained
// only where §3 retains), subscribes only to its own commands, and is held
// to packet, retained, session and inflight limits. Passwords are salted
// hashes (bcrypt or mosquitto_passwd's PBKDF2); failed logins are throttled
// per address. Without users, anonymous clients get full access, which New
// allows only on loopback listeners unless a listener is explicitly named
// insecure. The relay itself connects over TCP like any client (same code as
// for an external broker) with generated credentials that have full access.
package broker

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/robotfleet/fleetlink/internal/mochiclose"
	"github.com/robotfleet/fleetlink/protocol"
)

// User is one broker account. A robot's username is its robot id.
type User struct {
	// Username: the robot id, or any name for an admin account.
	Username string `yaml:"username"`
	// Password: a salted hash from `fleet-relay passwd` or mosquitto_passwd
	// (bcrypt $2b$..., PBKDF2 $7$..., or $6$...). Plain text and unsalted
	// "sha256:<hex>" still work, with a warning at start.
	Password string `yaml:"password"`
	// Admin grants full access (field engineers' tools, fleetctl). Default
	// false: a robot account confined to its own topics.
	Admin bool `yaml:"admin"`
}

// Listener names, as InsecureAnonymous takes them.
const (
	ListenerTCP = "tcp"
	ListenerTLS = "tls"
	ListenerWS  = "ws"
)

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
	// WSAllowedOrigins are the browser origins allowed on the WebSocket
	// listener ("*" = any). Default empty: only pages from the listener's
	// own host (and, with anonymous access, only a loopback host).
	// Clients without an Origin header are not affected.
	WSAllowedOrigins []string
	// Users that may connect. Default none, which gives anonymous clients
	// full access: allowed only when every listener is on loopback or
	// named in InsecureAnonymous.
	Users []User
	// InsecureAnonymous names listeners ("tcp", "tls", "ws") that may serve
	// anonymous clients although they listen beyond loopback. Default none.
	InsecureAnonymous []string
	// Limits bound what one client can make the broker hold.
	Limits Limits
	// Topics is the topic prefix the ACLs use. Default fleet.
	Topics protocol.Topics
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Limits bound packets, retained messages, sessions and queues. Zero fields
// take the defaults of DefaultLimits.
type Limits struct {
	// MaxPacketSize is the largest MQTT packet a client may send, in bytes;
	// a larger one closes its connection before it is read. Default 270336
	// (264 KiB: the spec's 256 KiB payload plus topic and headers).
	MaxPacketSize int `yaml:"max_packet_size"`
	// RetainedPerRobot caps one robot account's retained messages (its
	// status, metrics and session states); past it the robot's oldest
	// retained session state is dropped. Default 64.
	RetainedPerRobot int `yaml:"retained_per_robot"`
	// RetainedBytesPerRobot caps their bytes. Default 4194304 (4 MiB).
	RetainedBytesPerRobot int `yaml:"retained_bytes_per_robot"`
	// RetainedTotal caps all retained messages; past it a new retained
	// message is delivered but not kept (counted). Default 100000.
	RetainedTotal int `yaml:"retained_total"`
	// RetainedBytesTotal caps their bytes. Default 268435456 (256 MiB).
	RetainedBytesTotal int64 `yaml:"retained_bytes_total"`
	// SessionExpiry bounds how long a disconnected persistent session
	// (clean session off) is kept, for every account but the relay's.
	// Default 1h.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// RelaySessionExpiry is the same for the relay's own account: long, so
	// that the relay's session outlives a relay outage. Default 12h.
	RelaySessionExpiry time.Duration `yaml:"relay_session_expiry"`
	// MaxInflight caps the QoS 1 and 2 messages stored per client,
	// including those queued for a disconnected persistent session; past
	// it messages to that client are dropped (counted). Default 4096.
	MaxInflight int `yaml:"max_inflight"`
	// MaxPendingWrites caps the messages queued to one connected client's
	// socket. Default 8192.
	MaxPendingWrites int `yaml:"max_pending_writes"`
	// MaxClients connected at once. Default 100000.
	MaxClients int `yaml:"max_clients"`
	// AuthFailuresPerMinute is the sustained rate of failed logins allowed
	// per client address after AuthFailureBurst; past it the address's
	// logins are refused unchecked ("server unavailable") until it slows
	// down. Defaults 6 and 10.
	AuthFailuresPerMinute float64 `yaml:"auth_failures_per_minute"`
	AuthFailureBurst      int     `yaml:"auth_failure_burst"`
}

// DefaultLimits returns the defaults of Limits.
func DefaultLimits() Limits {
	return Limits{
		MaxPacketSize: 264 << 10, RetainedPerRobot: 64, RetainedBytesPerRobot: 4 << 20,
		RetainedTotal: 100_000, RetainedBytesTotal: 256 << 20,
		SessionExpiry: time.Hour, RelaySessionExpiry: 12 * time.Hour,
		MaxInflight: 4096, MaxPendingWrites: 8192, MaxClients: 100_000,
		AuthFailuresPerMinute: 6, AuthFailureBurst: 10,
	}
}

// withDefaults fills zero fields.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	fill := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&l.MaxPacketSize, d.MaxPacketSize)
	fill(&l.RetainedPerRobot, d.RetainedPerRobot)
	fill(&l.RetainedBytesPerRobot, d.RetainedBytesPerRobot)
	fill(&l.RetainedTotal, d.RetainedTotal)
	fill(&l.MaxInflight, d.MaxInflight)
	fill(&l.MaxPendingWrites, d.MaxPendingWrites)
	fill(&l.MaxClients, d.MaxClients)
	fill(&l.AuthFailureBurst, d.AuthFailureBurst)
	if l.RetainedBytesTotal == 0 {
		l.RetainedBytesTotal = d.RetainedBytesTotal
	}
	if l.SessionExpiry == 0 {
		l.SessionExpiry = d.SessionExpiry
	}
	if l.RelaySessionExpiry == 0 {
		l.RelaySessionExpiry = d.RelaySessionExpiry
	}
	if l.AuthFailuresPerMinute == 0 {
		l.AuthFailuresPerMinute = d.AuthFailuresPerMinute
	}
	return l
}

// Check validates limits (zero fields take defaults) and returns every
// violation, each naming its YAML key.
func (l Limits) Check() error {
	l = l.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if l.MaxPacketSize < 4096 || l.MaxPacketSize > 256<<20 {
		bad("max_packet_size", "must be 4096..268435456, got %d", l.MaxPacketSize)
	}
	if l.RetainedPerRobot < 3 {
		bad("retained_per_robot", "must be >= 3 (status, metrics and a session state), got %d", l.RetainedPerRobot)
	}
	if l.RetainedBytesPerRobot < 2*l.MaxPacketSize {
		bad("retained_bytes_per_robot", "must be >= 2 × max_packet_size (%d), got %d", 2*l.MaxPacketSize, l.RetainedBytesPerRobot)
	}
	if l.RetainedTotal < l.RetainedPerRobot {
		bad("retained_total", "must be >= retained_per_robot (%d), got %d", l.RetainedPerRobot, l.RetainedTotal)
	}
	if l.RetainedBytesTotal < int64(l.RetainedBytesPerRobot) {
		bad("retained_bytes_total", "must be >= retained_bytes_per_robot (%d), got %d", l.RetainedBytesPerRobot, l.RetainedBytesTotal)
	}
	for key, d := range map[string]time.Duration{"session_expiry": l.SessionExpiry, "relay_session_expiry": l.RelaySessionExpiry} {
		if d < time.Second || d > math.MaxUint32*time.Second {
			bad(key, "must be 1s..%s, got %s", math.MaxUint32*time.Second, d)
		}
	}
	if l.MaxInflight < 1 || l.MaxInflight > math.MaxUint16 {
		bad("max_inflight", "must be 1..65535, got %d", l.MaxInflight)
	}
	if l.MaxPendingWrites < 1 || l.MaxPendingWrites > math.MaxInt32 {
		bad("max_pending_writes", "must be >= 1, got %d", l.MaxPendingWrites)
	}
	if l.MaxClients < 1 {
		bad("max_clients", "must be >= 1, got %d", l.MaxClients)
	}
	if l.AuthFailuresPerMinute < 0 {
		bad("auth_failures_per_minute", "must be > 0, got %v", l.AuthFailuresPerMinute)
	}
	if l.AuthFailureBurst < 1 {
		bad("auth_failure_burst", "must be >= 1, got %d", l.AuthFailureBurst)
	}
	return errors.Join(errs...)
}

// Stats are the broker's security counters. All fields are atomic.
type Stats struct {
	AuthFailures    atomic.Int64 // logins refused: unknown user or wrong password
	AuthThrottled   atomic.Int64 // logins refused unchecked: too many failures from the address
	ConnectsRefused atomic.Int64 // authenticated CONNECTs refused: client id, Will or session owner
	PublishRefused  atomic.Int64 // publishes refused: topic or retain flag not allowed
	RetainedEvicted atomic.Int64 // a robot's oldest retained session state dropped for a newer one
	RetainedRefused atomic.Int64 // retained messages delivered but not kept: a cap was reached
	OriginRefused   atomic.Int64 // WebSocket upgrades refused: Origin not allowed
	SessionsExpired atomic.Int64 // disconnected persistent sessions dropped after their expiry
}

// Broker is a running embedded broker.
type Broker struct {
	srv      *mqtt.Server
	retained *retainedIndex
	tcp      *tcpListener
	ws       *wsListener
	user     string // the relay's own account
	password string
	stats    *Stats
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

// AnonymousError reports a listener that would serve anonymous clients
// beyond loopback, or "" when there is none. listeners maps a listener name
// (ListenerTCP, ...) to its address ("" = off).
func AnonymousError(listeners map[string]string, insecure []string) string {
	for _, name := range []string{ListenerTCP, ListenerTLS, ListenerWS} {
		addr := listeners[name]
		if addr == "" || loopbackAddr(addr) || slices.Contains(insecure, name) {
			continue
		}
		return fmt.Sprintf("no users are configured, so anonymous clients get full access (read every robot, "+
			"command every robot), and the %s listener %q is not on loopback; add robot accounts (users or "+
			"password_file), listen on 127.0.0.1, or name %q in insecure_anonymous", name, addr, name)
	}
	return ""
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
	if err := o.Limits.Check(); err != nil {
		return nil, fmt.Errorf("%w: limits: %v", ErrConfig, err)
	}
	lim := o.Limits.withDefaults()
	for _, n := range o.InsecureAnonymous {
		if n != ListenerTCP && n != ListenerTLS && n != ListenerWS {
			return nil, fmt.Errorf("%w: insecure_anonymous: unknown listener %q (want tcp, tls or ws)", ErrConfig, n)
		}
	}
	log := o.Logger.With("component", "embedded-broker")
	stats := &Stats{}
	h := &aclHook{topics: o.Topics, users: map[string]User{}, log: log, stats: stats,
		throttle: newThrottle(lim.AuthFailuresPerMinute, lim.AuthFailureBurst), verify: newVerifier(),
		retained: newRetainedIndex(lim.RetainedPerRobot, lim.RetainedBytesPerRobot, lim.RetainedTotal, lim.RetainedBytesTotal)}
	for i, u := range o.Users {
		if u.Username == "" || u.Password == "" {
			return nil, fmt.Errorf("%w: users[%d]: username and password are required", ErrConfig, i)
		}
		if !u.Admin {
			if err := protocol.CheckID("username (robot id)", u.Username); err != nil {
				return nil, fmt.Errorf("%w: users[%d]: %v", ErrConfig, i, err)
			}
		}
		if _, dup := h.users[u.Username]; dup {
			return nil, fmt.Errorf("%w: users[%d]: username %q appears twice", ErrConfig, i, u.Username)
		}
		kind, err := passwordKind(u.Password)
		if err != nil {
			return nil, fmt.Errorf("%w: users[%d] (%s): password: %v", ErrConfig, i, u.Username, err)
		}
		if kind == "plain" || kind == "sha256" {
			log.Warn("embedded broker account has an unsalted password; store a hash from `fleet-relay passwd` instead",
				"username", u.Username, "format", kind)
		}
		h.users[u.Username] = u
	}
	h.anonymous = len(o.Users) == 0
	if h.anonymous {
		addrs := map[string]string{ListenerTCP: o.Listen, ListenerTLS: o.TLSListen, ListenerWS: o.WSListen}
		if msg := AnonymousError(addrs, o.InsecureAnonymous); msg != "" {
			return nil, fmt.Errorf("%w: %s", ErrConfig, msg)
		}
		log.Warn("embedded broker has no users configured: anonymous clients get full access", "listen", o.Listen)
	}
	b := &Broker{user: "fleet-relay-" + randHex(6), password: randHex(24), stats: stats, stop: make(chan struct{})}
	h.internalUser, h.internalPass = b.user, b.password

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(lim.MaxPacketSize)
	caps.MaximumClients = int64(lim.MaxClients)
	caps.MaximumInflight = uint16(lim.MaxInflight)
	caps.MaximumClientWritesPending = int32(lim.MaxPendingWrites)
	// mochi applies this to sessions of MQTT 3.1.1 clients and caps what
	// MQTT 5 clients ask for; sweepSessions holds every account but the
	// relay's to the shorter SessionExpiry.
	caps.MaximumSessionExpiryInterval = uint32(lim.RelaySessionExpiry / time.Second)
	// 0: retained messages are kept until replaced (as Mosquitto does), not
	// deleted after mochi's default 24 h, which lost the retained status of
	// robots online longer than a day. Their number and bytes are capped.
	caps.MaximumMessageExpiryInterval = 0
	// mochi logs every connection at info and every closed one as a warning; keep its errors.
	mlog := slog.New(&levelHandler{min: slog.LevelError, h: log.Handler()})
	b.srv = mqtt.New(&mqtt.Options{Logger: mlog, InlineClient: false, Capabilities: caps})
	h.srv = b.srv
	b.retained = h.retained
	if err := b.srv.AddHook(h, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	wg := &b.srv.Listeners.ClientsWg
	b.tcp = newTCPListener(ListenerTCP, o.Listen, nil, wg)
	if err := b.srv.AddListener(b.tcp); err != nil {
		return nil, fmt.Errorf("%w: tcp %s: %v", ErrListen, o.Listen, err)
	}
	if o.TLSListen != "" {
		if err := b.srv.AddListener(newTCPListener(ListenerTLS, o.TLSListen, o.TLS, wg)); err != nil {
			_ = mochiclose.Close(b.srv)
			return nil, fmt.Errorf("%w: tls %s: %v", ErrListen, o.TLSListen, err)
		}
	}
	if o.WSListen != "" {
		b.ws = newWSListener(ListenerWS, o.WSListen, nil, originCheck(o.WSAllowedOrigins, h.anonymous),
			int64(2*lim.MaxPacketSize), &stats.OriginRefused, wg)
		if err := b.srv.AddListener(b.ws); err != nil {
			_ = mochiclose.Close(b.srv)
			return nil, fmt.Errorf("%w: ws %s: %v", ErrListen, o.WSListen, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		_ = mochiclose.Close(b.srv)
		return nil, fmt.Errorf("%w: %v", ErrListen, err)
	}
	b.wg.Add(1)
	go b.sweepSessions(lim.SessionExpiry)
	log.Info("embedded MQTT broker listening", "tcp", b.tcp.Address(), "tls", o.TLSListen, "ws", b.WSAddr(), "users", len(o.Users))
	return b, nil
}

// sweepSessions drops disconnected persistent sessions of every account but
// the relay's once they are older than expiry.
func (b *Broker) sweepSessions(expiry time.Duration) {
	defer b.wg.Done()
	every := min(max(expiry/4, 50*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			for id, cl := range b.srv.Clients.GetAll() {
				stopped := cl.StopTime()
				if stopped == 0 || string(cl.Properties.Username) == b.user || now.Unix()-stopped < int64(expiry/time.Second) {
					continue
				}
				b.srv.UnsubscribeClient(cl)
				cl.ClearInflights()
				b.srv.Clients.Delete(id)
				b.stats.SessionsExpired.Add(1)
			}
		}
	}
}

// Addr returns the TCP listener's address (host:port, the real port when
// Listen asked for port 0).
func (b *Broker) Addr() string { return b.tcp.Address() }

// WSAddr returns the WebSocket listener's address, or "" when it is off.
func (b *Broker) WSAddr() string {
	if b.ws == nil {
		return ""
	}
	return b.ws.Address()
}

// URL returns tcp://Addr().
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Credentials returns the relay's own account, valid for this process only.
func (b *Broker) Credentials() (username, password string) { return b.user, b.password }

// Stats returns the broker's counters.
func (b *Broker) Stats() *Stats { return b.stats }

// Close stops the broker.
func (b *Broker) Close() error {
	b.once.Do(func() { close(b.stop) })
	b.wg.Wait()
	return mochiclose.Close(b.srv)
}

func randHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}
