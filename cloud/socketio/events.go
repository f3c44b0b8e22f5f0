package socketio

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/protocol"
)

// Payloads of the events the server emits (spec §6; extra fields allowed).
type (
	connectedPayload struct {
		ClientID   string   `json:"client_id"`
		ServerTime string   `json:"server_time"`
		HeartbeatS float64  `json:"heartbeat_s"`
		Role       string   `json:"role"`
		Robots     []string `json:"robots"`
		ExpiresAt  string   `json:"expires_at,omitempty"`
	}
	subscribedPayload struct {
		SessionID string            `json:"session_id,omitempty"`
		RobotID   string            `json:"robot_id,omitempty"`
		Room      string            `json:"room"`
		Recovered bool              `json:"recovered"`
		More      bool              `json:"more"`
		Snapshot  []json.RawMessage `json:"snapshot"`
	}
	unsubscribedPayload struct {
		SessionID string `json:"session_id,omitempty"`
		RobotID   string `json:"robot_id,omitempty"`
		Room      string `json:"room"`
	}
	pongPayload struct {
		Timestamp  json.RawMessage `json:"timestamp"`
		ServerTime string          `json:"server_time"`
	}
	errorPayload struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Event   string `json:"event,omitempty"` // the client event this answers
		Robot   string `json:"robot,omitempty"`
	}
	droppedPayload struct {
		Room  string `json:"room"`
		Count int    `json:"count"`
	}
	commandReplyPayload struct {
		OK        bool                   `json:"ok"`
		Result    json.RawMessage        `json:"result,omitempty"`
		Error     *protocol.CommandError `json:"error,omitempty"`
		CommandID string                 `json:"command_id"`
		Robot     string                 `json:"robot"`
		Reply     json.RawMessage        `json:"reply,omitempty"` // the robot's command.reply envelope
	}
)

// Arguments of the client's events.
type (
	roomArgs struct {
		SessionID string `json:"session_id"`
		RobotID   string `json:"robot_id"`
		SinceSeq  *int64 `json:"since_seq"`
	}
	commandArgs struct {
		Robot string         `json:"robot"`
		Name  string         `json:"name"`
		Args  map[string]any `json:"args"`
	}
)

// handleSIO processes one Socket.IO packet. Called with inMu held.
func (s *socket) handleSIO(b []byte) {
	p, err := DecodeSIO(b)
	if err != nil {
		s.srv.stats.BadPackets.Add(1)
		s.fail(p.ID, "", hub.CodeBadRequest, "bad Socket.IO packet: "+err.Error())
		return
	}
	if p.Namespace != "/" {
		if p.Type == SIOConnect {
			s.srv.stats.ConnectErrors.Add(1)
			s.pushControl(appendSIO(nil, SIOConnectError, p.Namespace, mustJSON(connectError{
				Message: "Invalid namespace", Data: connectErrorData{Code: hub.CodeBadRequest, Message: "only namespace / exists"}})))
		}
		return // packets of a namespace the client never joined are ignored
	}
	switch p.Type {
	case SIOConnect:
		s.connect(p.Data)
	case SIODisconnect:
		s.close(reasonDisconnect)
	case SIOEvent:
		if !s.connected.Load() {
			s.srv.stats.BadPackets.Add(1)
			return // the client library never emits before it is connected
		}
		s.event(p)
	case SIOAck:
		// The server never asks for acks.
	default:
		s.srv.stats.BadPackets.Add(1)
		s.fail(p.ID, "", hub.CodeBadRequest, "unexpected Socket.IO packet type "+itoa(int64(p.Type)))
	}
}

type connectError struct {
	Message string           `json:"message"`
	Data    connectErrorData `json:"data"`
}

type connectErrorData struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// connect joins namespace "/" after checking the auth object's token.
func (s *socket) connect(data json.RawMessage) {
	if s.connected.Load() {
		return
	}
	var a struct {
		Token string `json:"token"`
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &a); err != nil {
			s.srv.stats.ConnectErrors.Add(1)
			s.pushControl(appendSIO(nil, SIOConnectError, "/", mustJSON(connectError{Message: "bad_request",
				Data: connectErrorData{Code: hub.CodeBadRequest, Message: "auth.token must be a string"}})))
			return
		}
	}
	if a.Token == "" {
		// Clients that cannot set auth (old or Python clients) may send the
		// token as /ws takes it: a bearer header or ?token= on the handshake.
		a.Token = s.httpToken
	}
	p, err := s.srv.o.Auth.Authenticate(a.Token)
	if err != nil {
		s.srv.stats.ConnectErrors.Add(1)
		s.pushControl(appendSIO(nil, SIOConnectError, "/", mustJSON(connectError{Message: "unauthorized",
			Data: connectErrorData{Code: hub.CodeUnauthorized, Message: err.Error()}})))
		return
	}
	s.cc.Authenticate(p)
	s.connected.Store(true)
	s.srv.joined(s.sess)
	s.srv.stats.Connects.Add(1)
	s.pushControl(appendSIO(nil, SIOConnect, "/", []byte(`{"sid":"`+newSID()+`"}`)))
	cp := connectedPayload{ClientID: s.cc.ID, ServerTime: protocol.Now().String(),
		HeartbeatS: s.srv.o.PingInterval.Seconds(), Role: string(p.Role), Robots: p.Robots}
	if !p.ExpiresAt.IsZero() {
		cp.ExpiresAt = protocol.T(p.ExpiresAt).String()
	}
	s.emit("connected", mustJSON(cp))
}

// expire ends a session whose token expired: an error, a server
// disconnect (the client does not reconnect on its own with the stale
// token), then the close once that is flushed.
func (s *socket) expire() {
	s.emit("error", mustJSON(errorPayload{Code: hub.CodeUnauthorized, Message: "token expired"}))
	s.pushControl(appendSIO(nil, SIODisconnect, "/", nil))
	s.closeAfterFlush()
}

// event dispatches one EVENT. Called with inMu held.
func (s *socket) event(p SIOPacket) {
	name, arg, err := EventArgs(p.Data)
	if err != nil {
		s.srv.stats.BadPackets.Add(1)
		s.fail(p.ID, "", hub.CodeBadRequest, err.Error())
		return
	}
	if !s.cc.Allow() {
		s.fail(p.ID, name, hub.CodeRateLimited, "too many events; slow down")
		return
	}
	ack := p.ID
	ref := sioRef{ack: ack, event: name}
	switch name {
	case "subscribe_session", "subscribe_robot", "subscribe_fleet",
		"unsubscribe_session", "unsubscribe_robot", "unsubscribe_fleet":
		room, a, err := roomOf(name, arg)
		if err != nil {
			s.fail(ack, name, hub.CodeBadRequest, err.Error())
			return
		}
		ref.a = a
		op := conn.Op{Kind: conn.OpUnsubscribe, Room: room, SinceSeq: -1, Ref: ref}
		if strings.HasPrefix(name, "subscribe_") {
			op.Kind = conn.OpSubscribe
			if a.SinceSeq != nil {
				op.SinceSeq = *a.SinceSeq
			}
		}
		s.cc.Do(op)
	case "ping":
		ref.ts = pingTimestamp(arg)
		s.cc.Do(conn.Op{Kind: conn.OpPing, Ref: ref})
	case "command":
		var a commandArgs
		if len(arg) == 0 || arg[0] != '{' || json.Unmarshal(arg, &a) != nil {
			s.fail(ack, "command", hub.CodeBadRequest, "the argument must be an object {robot, name, args}")
			return
		}
		s.cc.Do(conn.Op{Kind: conn.OpCommand, Robot: a.Robot, Name: a.Name, Args: a.Args, Ref: ref})
	default:
		s.srv.stats.BadPackets.Add(1)
		s.fail(ack, name, hub.CodeBadRequest, fmt.Sprintf("unknown event %q", clip(name)))
	}
}

// roomOf returns the room a (un)subscribe event names. The argument is an
// object ({"session_id": ...}), or just the id as a string.
func roomOf(event string, arg json.RawMessage) (string, roomArgs, error) {
	var a roomArgs
	if len(arg) > 0 && arg[0] == '"' {
		var id string
		if err := json.Unmarshal(arg, &id); err != nil {
			return "", a, fmt.Errorf("%w: %v", ErrBadArgs, err)
		}
		a.SessionID, a.RobotID = id, id
	} else if len(arg) > 0 && string(arg) != "null" {
		if err := json.Unmarshal(arg, &a); err != nil {
			return "", a, fmt.Errorf("%w: the argument must be an object: %v", ErrBadArgs, err)
		}
	}
	if a.SinceSeq != nil && *a.SinceSeq < 0 {
		return "", a, fmt.Errorf("%w: since_seq must be >= 0", ErrBadArgs)
	}
	switch event {
	case "subscribe_session", "unsubscribe_session":
		a.RobotID = ""
		if err := protocol.CheckID("session_id", a.SessionID); err != nil {
			return "", a, fmt.Errorf("%w: %v", ErrBadArgs, err)
		}
		return hub.SessionRoom(a.SessionID), a, nil
	case "subscribe_robot", "unsubscribe_robot":
		a.SessionID = ""
		if err := protocol.CheckID("robot_id", a.RobotID); err != nil {
			return "", a, fmt.Errorf("%w: %v", ErrBadArgs, err)
		}
		return hub.RobotRoom(a.RobotID), a, nil
	}
	a.SessionID, a.RobotID = "", ""
	return hub.RoomFleet, a, nil
}

// sioRef is what a Socket.IO answer needs of its request: the ack id (-1:
// none), the event name, the room arguments and a ping's timestamp.
type sioRef struct {
	ack   int64
	event string
	a     roomArgs
	ts    json.RawMessage
}

// Snapshot implements conn.Wire.
func (s *socket) Snapshot(op conn.Op, parts *hub.Parts) hub.Stream {
	ref, _ := op.Ref.(sioRef)
	return &snapshotStream{parts: parts, ack: ref.ack, a: ref.a}
}

// Encode implements conn.Wire: a result through the ack (when the client
// asked for one) and as the named event.
func (s *socket) Encode(op conn.Op, r conn.Result) [][]byte {
	ref, _ := op.Ref.(sioRef)
	switch r.Kind {
	case conn.Unsubscribed:
		return answerFrames(ref.ack, "unsubscribed", mustJSON(unsubscribedPayload{SessionID: ref.a.SessionID, RobotID: ref.a.RobotID, Room: r.Room}))
	case conn.Pong:
		return answerFrames(ref.ack, "pong", mustJSON(pongPayload{Timestamp: ref.ts, ServerTime: protocol.Now().String()}))
	case conn.CommandReply:
		res := r.Reply
		return answerFrames(ref.ack, "command_reply", mustJSON(commandReplyPayload{OK: res.Reply.OK, Result: command.MarshalResult(res.Reply),
			Error: res.Reply.Error, CommandID: res.CommandID, Robot: r.Robot, Reply: res.Raw}))
	}
	return answerFrames(ref.ack, "error", mustJSON(errorPayload{Code: r.Code, Message: r.Message, Event: ref.event, Robot: r.Robot}))
}

// answerFrames are the ack (when asked for) and the named event.
func answerFrames(ack int64, name string, payload []byte) [][]byte {
	var out [][]byte
	if ack >= 0 {
		out = append(out, AppendAck(nil, ack, payload))
	}
	return append(out, AppendEvent(nil, name, payload))
}

// snapshotStream streams a subscribe's snapshot: the first part in
// `subscribed` (and the ack), later parts in `snapshot` events, each part's
// envelopes then as the individual named events (spec §5, §6).
type snapshotStream struct {
	parts *hub.Parts
	ack   int64
	a     roomArgs
}

// Next implements hub.Stream.
func (st *snapshotStream) Next(buf [][]byte) ([][]byte, bool) {
	es, first, more := st.parts.Next()
	sp := subscribedPayload{SessionID: st.a.SessionID, RobotID: st.a.RobotID, Room: st.parts.Snap.Room,
		Recovered: st.parts.Snap.Recovered, More: more, Snapshot: make([]json.RawMessage, len(es))}
	for i, e := range es {
		sp.Snapshot[i] = e.Raw
	}
	b := mustJSON(sp)
	if first {
		if st.ack >= 0 {
			buf = append(buf, AppendAck(nil, st.ack, b))
		}
		buf = append(buf, AppendEvent(nil, "subscribed", b))
	} else {
		buf = append(buf, AppendEvent(nil, "snapshot", b))
	}
	for _, e := range es {
		buf = append(buf, AppendEvent(nil, EventName(e.Ev.Type), e.Raw))
	}
	return buf, more
}

// pingTimestamp is the pong's timestamp: the client's own timestamp field
// when its ping carried one (for round-trip measurement), else the server's
// clock in Unix milliseconds.
func pingTimestamp(arg json.RawMessage) json.RawMessage {
	var a struct {
		Timestamp json.RawMessage `json:"timestamp"`
	}
	if len(arg) > 0 && arg[0] == '{' && json.Unmarshal(arg, &a) == nil && len(a.Timestamp) > 0 {
		return a.Timestamp
	}
	return json.RawMessage(itoa(time.Now().UnixMilli()))
}

// emit queues event name with a JSON payload.
func (s *socket) emit(name string, payload []byte) { s.pushControl(AppendEvent(nil, name, payload)) }

// answer sends the answer of a client event through its ack (when it asked
// for one) and as the named event.
func (s *socket) answer(ack int64, name string, payload []byte) {
	s.cc.Control(answerFrames(ack, name, payload)...)
}

// fail answers a client event with an `error` {code, message}, through its
// ack as well when it asked for one.
func (s *socket) fail(ack int64, event, code, msg string) {
	s.answer(ack, "error", mustJSON(errorPayload{Code: code, Message: msg, Event: event}))
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func itoa(n int64) string { return fmt.Sprint(n) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own payload structs are marshalled; they always encode.
		panic(fmt.Sprintf("socketio: encode payload: %v", err))
	}
	return b
}
