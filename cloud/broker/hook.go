package broker

import (
	"bytes"
	"crypto/subtle"
	"log/slog"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/robotfleet/fleetlink/protocol"
)

// role is what an authenticated account may do.
type role int

const (
	roleNone      role = iota // unknown: nothing
	roleRelay                 // the relay's own generated account: everything
	roleAdmin                 // users with admin: true: everything
	roleAnonymous             // no users configured (loopback only): everything
	roleRobot                 // a robot: its own §3 topics only
)

// aclHook authenticates clients at CONNECT and confines robots to the
// topics spec §3 gives them. mochi calls OnConnect then, at once,
// OnConnectAuthenticate for every connection; OnConnect does the work so it
// can answer "not authorized" (OnConnectAuthenticate can only answer "bad
// username or password"), and marks the clients it let through.
type aclHook struct {
	mqtt.HookBase
	srv                        *mqtt.Server
	topics                     protocol.Topics
	users                      map[string]User // read-only after New
	internalUser, internalPass string
	anonymous                  bool
	throttle                   *throttle
	verify                     *verifier
	retained                   *retainedIndex
	stats                      *Stats
	log                        *slog.Logger
	approved                   sync.Map // *mqtt.Client → struct{}: passed OnConnect, awaiting OnConnectAuthenticate
	warned                     sync.Map // "kind account" → time.Time: last rate-limited warning (keys bounded by the accounts)
}

func (h *aclHook) ID() string { return "fleet-acl" }

func (h *aclHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired:
		return true
	}
	return false
}

// roleOf returns the role of an authenticated username.
func (h *aclHook) roleOf(user string) role {
	switch {
	case user == h.internalUser:
		return roleRelay
	case h.anonymous:
		return roleAnonymous
	}
	u, ok := h.users[user]
	switch {
	case !ok:
		return roleNone
	case u.Admin:
		return roleAdmin
	}
	return roleRobot
}

// refuse answers a CONNECT with code (mapped to MQTT 3.1.1's return codes
// for older clients) and returns it, which makes mochi close the connection.
func (h *aclHook) refuse(cl *mqtt.Client, code packets.Code) error {
	send := code
	if cl.Properties.ProtocolVersion < 5 {
		switch code {
		case packets.ErrNotAuthorized, packets.ErrBadUsernameOrPassword:
			send = packets.Err3NotAuthorized
		case packets.ErrServerUnavailable:
			send = packets.Err3ServerUnavailable
		}
	}
	_ = h.srv.SendConnack(cl, send, false, nil)
	return code
}

func (h *aclHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	addr := host(cl.Net.Remote)
	log := h.log.With("client", cl.ID, "username", user, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	switch {
	case user == h.internalUser:
		if subtle.ConstantTimeCompare([]byte(pass), []byte(h.internalPass)) != 1 {
			return h.authFailed(cl, addr, log)
		}
	case h.anonymous:
		// New allows no users only where every listener is loopback or
		// named insecure: anyone who can connect has full access.
	default:
		if blocked, logNow := h.throttle.blocked(addr, time.Now()); blocked {
			h.stats.AuthThrottled.Add(1)
			if logNow {
				log.Warn("embedded broker: refusing logins from an address with too many failures")
			}
			return h.refuse(cl, packets.ErrServerUnavailable)
		}
		u, ok := h.users[user]
		if !ok || !h.verify.check(user, u.Password, pass) {
			return h.authFailed(cl, addr, log)
		}
	}
	if reason := h.connectForbidden(cl, user); reason != "" {
		h.stats.ConnectsRefused.Add(1)
		key := "refused *" // anonymous clients choose their usernames: one key for all
		if _, ok := h.users[user]; ok {
			key = "refused " + user
		}
		h.warnEvery(key, log, "embedded broker: connection refused: not authorized", "reason", reason)
		return h.refuse(cl, packets.ErrNotAuthorized)
	}
	h.approved.Store(cl, struct{}{})
	return nil
}

func (h *aclHook) authFailed(cl *mqtt.Client, addr string, log *slog.Logger) error {
	h.stats.AuthFailures.Add(1)
	if n, logNow := h.throttle.failed(addr, time.Now()); logNow {
		log.Warn("embedded broker: login failed", "failures_from_address", n)
	}
	return h.refuse(cl, packets.ErrBadUsernameOrPassword)
}

// connectForbidden returns why an authenticated CONNECT must be refused,
// or "". Robots are bound to their client id (their username, as
// Mosquitto's use_username_as_clientid) so that one robot's credentials
// cannot take over another robot's session and fire its Will (a
// "username-*" allowance would let robot r take over robot r-1); a Will is
// checked against the write rules now because mochi publishes it later
// without an ACL check; and no account may take over a session another
// account holds.
func (h *aclHook) connectForbidden(cl *mqtt.Client, user string) string {
	r := h.roleOf(user)
	if r == roleRobot && cl.ID != user {
		return "a robot's client id must be its username"
	}
	if cl.Properties.Will.Flag == 1 {
		w := cl.Properties.Will
		if !h.mayWrite(r, user, w.TopicName, w.Retain) {
			return "will topic not allowed: " + w.TopicName
		}
		if r == roleRobot && (w.TopicName != h.topics.Status(user) || w.Qos > 1) {
			return "a robot's will may only be its own status at QoS 0 or 1"
		}
	}
	if existing, ok := h.srv.Clients.Get(cl.ID); ok && !bytes.Equal(existing.Properties.Username, cl.Properties.Username) {
		return "client id belongs to another account's session"
	}
	return ""
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	_, ok := h.approved.LoadAndDelete(cl)
	return ok
}

// mayWrite is the publish rule: a robot writes only its own §3 topics
// (never commands), retained only where §3 retains.
func (h *aclHook) mayWrite(r role, user, topic string, retain bool) bool {
	switch r {
	case roleRelay, roleAdmin, roleAnonymous:
		return true
	case roleRobot:
		tp, err := h.topics.Parse(topic)
		if err != nil || tp.Robot != user || tp.Kind == protocol.KindCommands {
			return false
		}
		return !retain || tp.Kind.Retained()
	}
	return false
}

func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	user := string(cl.Properties.Username)
	r := h.roleOf(user)
	if write {
		// The retain flag is checked in OnPublish, which sees it.
		ok := h.mayWrite(r, user, topic, false)
		if !ok {
			h.stats.PublishRefused.Add(1)
		}
		return ok
	}
	switch r {
	case roleRelay, roleAdmin, roleAnonymous:
		return true
	case roleRobot:
		return topic == h.topics.Commands(user) // subscribe: its own commands, no wildcards
	}
	return false
}

// OnPublish refuses retained messages where §3 has none and applies the
// retained caps. It runs after OnACLCheck allowed the topic.
func (h *aclHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain || len(pk.Payload) == 0 {
		return pk, nil // not retained, or clearing a retained message
	}
	user := string(cl.Properties.Username)
	r := h.roleOf(user)
	if !h.mayWrite(r, user, pk.TopicName, true) {
		h.stats.PublishRefused.Add(1)
		return pk, h.refusePublish(cl, pk)
	}
	owner, capped := h.owner(r, user)
	ok, evict := h.retained.admit(owner, capped, pk.TopicName, len(pk.Payload))
	for _, t := range evict {
		h.srv.Topics.RetainMessage(packets.Packet{TopicName: t})
		h.stats.RetainedEvicted.Add(1)
	}
	if !ok {
		// Delivered live, not kept: refusing the publish would make a
		// robot reconnect in a loop.
		h.stats.RetainedRefused.Add(1)
		h.warnEvery("retained "+owner, h.log, "embedded broker: retained message cap reached; delivering without retaining",
			"username", user, "topic", pk.TopicName)
		pk.FixedHeader.Retain = false
	}
	return pk, nil
}

// refusePublish drops a refused publish the way mochi drops one its ACL
// refuses: silently at QoS 0; at QoS 1 and 2 with a "not authorized"
// acknowledgement (MQTT 5) or by closing the connection (3.1.1 has no
// negative acknowledgement).
func (h *aclHook) refusePublish(cl *mqtt.Client, pk packets.Packet) error {
	if pk.FixedHeader.Qos == 0 {
		return packets.ErrRejectPacket
	}
	if cl.Properties.ProtocolVersion == 5 {
		return packets.ErrNotAuthorized
	}
	_ = h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	return packets.ErrRejectPacket
}

// owner is the retained-accounting owner of an account: each robot on its
// own, capped; everyone else together, uncapped (the total still applies).
func (h *aclHook) owner(r role, user string) (string, bool) {
	if r == roleRobot {
		return user, true
	}
	return "", false
}

func (h *aclHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, _ int64) {
	if len(pk.Payload) == 0 {
		h.retained.remove(pk.TopicName)
		return
	}
	user := string(cl.Properties.Username)
	owner, _ := h.owner(h.roleOf(user), user)
	tp, err := h.topics.Parse(pk.TopicName)
	h.retained.record(owner, pk.TopicName, len(pk.Payload), err == nil && tp.Kind == protocol.KindSessionState)
}

func (h *aclHook) OnRetainedExpired(filter string) { h.retained.remove(filter) }

// warnEvery logs msg at most once a minute per key.
func (h *aclHook) warnEvery(key string, log *slog.Logger, msg string, args ...any) {
	now := time.Now()
	if last, ok := h.warned.Load(key); ok && now.Sub(last.(time.Time)) < time.Minute {
		return
	}
	h.warned.Store(key, now)
	log.Warn(msg, args...)
}
