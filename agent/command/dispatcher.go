// Package command is robot-agent's command dispatcher: it decodes the
// commands published to fleet/v1/robots/{id}/commands, runs them against the
// session manager and answers every one, undecodable ones included, with a
// command.reply (spec §4).
//
// Commands are idempotent on their id: a QoS 1 redelivery, or the same
// command sent again after a reconnect or replayed later, gets the first
// reply and starts nothing. Replies sit in a bounded in-memory cache and,
// with a Store, in <state_dir>/commands.db (the newest 4096 ids), so this
// holds across agent restarts; start_session ids are also kept with their
// session in the session journal.
//
// A command whose ts is further than MaxAge from the agent's clock (in the
// past, or in the future: a skewed clock) is refused with code "expired",
// so a captured command cannot be replayed once the store forgot its id.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/agent/session"
	"github.com/robotfleet/fleetlink/protocol"
)

// Limits of the reply cache and of replies.
const (
	cacheEntries    = 1024      // replies remembered for redeliveries
	cacheBytes      = 1 << 20   // their total encoded size
	maxCachedReply  = 64 << 10  // larger replies (long session lists) are not cached
	maxListBytes    = 192 << 10 // list_sessions drops its oldest entries beyond this, to fit a payload
	maxMessageBytes = 1024      // error messages are cut to this
	warnEvery       = time.Minute
)

// Options configures a Dispatcher.
type Options struct {
	// RobotID is the robot the commands are for; commands for another robot
	// are refused. Empty accepts any (tests).
	RobotID string
	// AgentVersion is reported by ping. Default "dev".
	AgentVersion string
	// StartedAt is when the agent started, for ping's uptime. Default: the time New is called.
	StartedAt time.Time
	// Now is the clock, for expires_at, max age and uptime. Default time.Now.
	Now func() time.Time
	// MaxAge refuses (code "expired") a command whose ts differs from the
	// agent's clock by more than this. Zero: no limit.
	MaxAge time.Duration
	// Store remembers command ids and replies across restarts. Nil: memory only.
	Store *Store
	// Log receives warnings about refused commands, at most one a minute.
	// Default: discard.
	Log *slog.Logger
}

// Dispatcher answers commands. It is safe for concurrent use.
type Dispatcher struct {
	mgr  *session.Manager
	opts Options

	mu       sync.Mutex // guards the fields below
	cache    map[string]cached
	order    []string                 // cache keys, oldest first
	bytes    int                      // encoded size of the cached replies
	inflight map[string]chan struct{} // command ids being handled; closed when done
	lastWarn time.Time
	muted    int // warnings suppressed since lastWarn
}

type cached struct {
	reply protocol.CommandReply
	size  int
}

// New returns a dispatcher running commands against mgr.
func New(mgr *session.Manager, opts Options) *Dispatcher {
	if opts.AgentVersion == "" {
		opts.AgentVersion = "dev"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.StartedAt.IsZero() {
		opts.StartedAt = opts.Now()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Log = opts.Log.With("component", "commands")
	return &Dispatcher{mgr: mgr, opts: opts, cache: map[string]cached{}, inflight: map[string]chan struct{}{}}
}

// Handle runs one command payload and returns its reply, ready for
// protocol.NewEvent(robotID, reply). It never blocks long: a start only
// queues the session, a cancel waits at most about a second.
func (d *Dispatcher) Handle(ctx context.Context, payload []byte) protocol.CommandReply {
	ev, err := protocol.Decode(payload)
	if err != nil {
		d.warn("refused undecodable command", "err", err)
		return fail(salvageID(payload), nil, protocol.CodeInvalidCommand, err.Error())
	}
	cmd, ok := ev.Data.(protocol.Command)
	if !ok {
		d.warn("refused non-command", "type", ev.Type, "id", ev.ID)
		return fail(ev.ID, nil, protocol.CodeInvalidCommand, fmt.Sprintf("%v: type is %q, want %q", ErrNotCommand, ev.Type, protocol.TypeCommand))
	}
	if d.opts.RobotID != "" && ev.Robot != d.opts.RobotID {
		d.warn("refused command for another robot", "robot", ev.Robot, "id", ev.ID)
		return fail(ev.ID, cmd.ReplyTo, protocol.CodeInvalidCommand, fmt.Sprintf("%v: robot is %q, this is %q", ErrWrongRobot, ev.Robot, d.opts.RobotID))
	}

	// One at a time per command id, so a duplicate waits for the first
	// reply instead of racing it.
	release, prev, ok := d.claim(ctx, ev.ID)
	if !ok {
		return fail(ev.ID, cmd.ReplyTo, protocol.CodeInternal, "agent shutting down")
	}
	defer release()
	if prev != nil {
		return *prev
	}
	if cmd.Name == protocol.CmdStartSession {
		if res, ok := d.mgr.StartedBy(ev.ID); ok {
			return protocol.CommandReply{CommandID: ev.ID, OK: true, Result: res, ReplyTo: cmd.ReplyTo}
		}
	}
	if d.opts.Store != nil {
		r, seen, err := d.opts.Store.Get(ev.ID)
		switch {
		case err != nil:
			// Better refuse than risk running a command twice.
			d.warn("command store read failed", "id", ev.ID, "err", err)
			return fail(ev.ID, cmd.ReplyTo, protocol.CodeInternal, "cannot check the command id against the agent's command store")
		case r != nil:
			return *r
		case seen && cmd.Name != protocol.CmdListSessions && cmd.Name != protocol.CmdPing:
			return fail(ev.ID, cmd.ReplyTo, protocol.CodeInvalidCommand, "command id already handled (its reply was too large to keep)")
		}
	}
	var reply protocol.CommandReply
	if msg, old := d.tooOld(ev.TS.Time); old {
		reply = fail("", nil, protocol.CodeExpired, msg)
	} else {
		reply = d.run(ev.ID, cmd)
	}
	reply.CommandID, reply.ReplyTo = ev.ID, cmd.ReplyTo
	if !reply.OK {
		d.warn("command refused", "id", ev.ID, "name", cmd.Name, "code", reply.Error.Code, "message", reply.Error.Message)
	}
	d.remember(ev.ID, reply)
	if d.opts.Store != nil {
		if err := d.opts.Store.Put(ev.ID, reply, d.opts.Now()); err != nil {
			d.warn("command store write failed", "id", ev.ID, "err", err)
		}
	}
	return reply
}

// tooOld says whether a command stamped ts is outside MaxAge of the
// agent's clock, and why.
func (d *Dispatcher) tooOld(ts time.Time) (string, bool) {
	if d.opts.MaxAge <= 0 {
		return "", false
	}
	now := d.opts.Now()
	age := now.Sub(ts)
	if age <= d.opts.MaxAge && -age <= d.opts.MaxAge {
		return "", false
	}
	when := fmt.Sprintf("%s old", age.Round(time.Millisecond))
	if age < 0 {
		when = fmt.Sprintf("%s in the future", (-age).Round(time.Millisecond))
	}
	return fmt.Sprintf("the command is %s (ts %s, robot clock %s; commands.max_age %s): refused as stale or replayed; "+
		"if it was just sent, the robot's or the sender's clock is off (check NTP)",
		when, ts.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), d.opts.MaxAge), true
}

// run executes cmd.
func (d *Dispatcher) run(id string, cmd protocol.Command) protocol.CommandReply {
	if cmd.ExpiresAt != nil && d.opts.Now().After(cmd.ExpiresAt.Time) {
		return fail("", nil, protocol.CodeExpired, fmt.Sprintf("the command expired at %s", cmd.ExpiresAt))
	}
	switch cmd.Name {
	case protocol.CmdStartSession:
		var a protocol.StartSessionArgs
		if err := decodeArgs(cmd.Args, &a); err != nil {
			return fail("", nil, protocol.CodeInvalidCommand, err.Error())
		}
		if a.Pipeline == "" {
			return fail("", nil, protocol.CodeInvalidCommand, fmt.Sprintf("%v: args.pipeline is required", ErrBadArgs))
		}
		if a.Model == "" {
			return fail("", nil, protocol.CodeInvalidCommand, fmt.Sprintf("%v: args.model is required", ErrBadArgs))
		}
		res, err := d.mgr.Start(session.StartRequest{CommandID: id, SessionID: a.SessionID, Pipeline: a.Pipeline, Model: a.Model, Params: a.Params})
		if err != nil {
			return fail("", nil, codeOf(err), err.Error())
		}
		return ok(res)
	case protocol.CmdCancelSession:
		var a struct {
			protocol.CancelSessionArgs
			By string `json:"by"`
		}
		if err := decodeArgs(cmd.Args, &a); err != nil {
			return fail("", nil, protocol.CodeInvalidCommand, err.Error())
		}
		if a.SessionID == "" {
			return fail("", nil, protocol.CodeInvalidCommand, fmt.Sprintf("%v: args.session_id is required", ErrBadArgs))
		}
		by := a.By
		if by == "" {
			by = "operator"
		}
		res, err := d.mgr.Cancel(a.SessionID, a.Reason, by)
		if err != nil {
			return fail("", nil, codeOf(err), err.Error())
		}
		return ok(res)
	case protocol.CmdListSessions:
		return ok(listResult(d.mgr.List()))
	case protocol.CmdPing:
		return ok(protocol.PingResult{Pong: true, AgentVersion: d.opts.AgentVersion,
			UptimeS: d.opts.Now().Sub(d.opts.StartedAt).Seconds()})
	}
	return fail("", nil, protocol.CodeUnknownCommand, fmt.Sprintf("unknown command %q (known: %s, %s, %s, %s)",
		clip(cmd.Name), protocol.CmdStartSession, protocol.CmdCancelSession, protocol.CmdListSessions, protocol.CmdPing))
}

// listSessions is list_sessions' result: the sessions, oldest first, with
// the oldest dropped (and counted) when the list would not fit a payload.
type listSessions struct {
	protocol.ListSessionsResult
	Omitted int `json:"omitted,omitempty"`
}

func listResult(all []protocol.SessionSummary) listSessions {
	res := listSessions{ListSessionsResult: protocol.ListSessionsResult{Sessions: all}}
	if res.Sessions == nil {
		res.Sessions = []protocol.SessionSummary{}
	}
	for len(res.Sessions) > 0 {
		b, err := json.Marshal(res)
		if err == nil && len(b) <= maxListBytes {
			break
		}
		res.Sessions = res.Sessions[1:]
		res.Omitted++
	}
	return res
}

// codeOf maps a session manager error to its command.reply code.
func codeOf(err error) string {
	switch {
	case errors.Is(err, session.ErrUnknownPipeline):
		return protocol.CodeUnknownPipeline
	case errors.Is(err, session.ErrInvalidModel):
		return protocol.CodeInvalidModel
	case errors.Is(err, session.ErrInvalidParams):
		return protocol.CodeInvalidParams
	case errors.Is(err, session.ErrInvalidRequest):
		return protocol.CodeInvalidCommand
	case errors.Is(err, session.ErrUnknownSession):
		return protocol.CodeUnknownSession
	case errors.Is(err, session.ErrSessionFinished):
		return protocol.CodeSessionFinished
	case errors.Is(err, session.ErrBusy):
		return protocol.CodeBusy
	}
	return protocol.CodeInternal
}

// decodeArgs converts a command's args into the typed struct v, naming the
// arg whose type is wrong.
func decodeArgs(args map[string]any, v any) error {
	b, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadArgs, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("%w: args.%s must be %s, got %s", ErrBadArgs, te.Field, jsonType(te.Type.Kind().String()), te.Value)
		}
		return fmt.Errorf("%w: %v", ErrBadArgs, err)
	}
	return nil
}

func jsonType(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	}
	return goKind
}

// salvageID returns the id of a payload that failed validation but is a
// JSON object with a string id, so the reply can still be correlated.
func salvageID(payload []byte) string {
	if len(payload) > protocol.MaxPayload {
		return ""
	}
	var env struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(payload, &env) != nil {
		return ""
	}
	if s, ok := env.ID.(string); ok && len(s) <= 64 && protocol.ValidID(s) {
		return s
	}
	return ""
}

func ok(result any) protocol.CommandReply { return protocol.CommandReply{OK: true, Result: result} }

func fail(id string, replyTo any, code, msg string) protocol.CommandReply {
	return protocol.CommandReply{CommandID: id, ReplyTo: replyTo, Error: &protocol.CommandError{Code: code, Message: clip(msg)}}
}

func clip(s string) string {
	if len(s) <= maxMessageBytes {
		return s
	}
	n := maxMessageBytes
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// claim waits until no other Handle runs command id and returns the cached
// reply, if any. release must be called when ok.
func (d *Dispatcher) claim(ctx context.Context, id string) (release func(), prev *protocol.CommandReply, ok bool) {
	for {
		d.mu.Lock()
		if c, hit := d.cache[id]; hit {
			d.mu.Unlock()
			r := c.reply
			return func() {}, &r, true
		}
		busy := d.inflight[id]
		if busy == nil {
			done := make(chan struct{})
			d.inflight[id] = done
			d.mu.Unlock()
			return func() {
				d.mu.Lock()
				delete(d.inflight, id)
				d.mu.Unlock()
				close(done)
			}, nil, true
		}
		d.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, nil, false
		}
	}
}

// remember caches reply under id, evicting the oldest entries beyond the
// entry and byte caps.
func (d *Dispatcher) remember(id string, reply protocol.CommandReply) {
	b, err := json.Marshal(reply)
	if err != nil || len(b) > maxCachedReply {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.cache[id]; dup {
		return
	}
	d.cache[id] = cached{reply: reply, size: len(b)}
	d.order = append(d.order, id)
	d.bytes += len(b)
	for len(d.order) > cacheEntries || d.bytes > cacheBytes {
		old := d.order[0]
		d.order = d.order[1:]
		d.bytes -= d.cache[old].size
		delete(d.cache, old)
	}
}

// warn logs at most one warning per warnEvery, counting the rest.
func (d *Dispatcher) warn(msg string, args ...any) {
	d.mu.Lock()
	now := d.opts.Now()
	if !d.lastWarn.IsZero() && now.Sub(d.lastWarn) < warnEvery {
		d.muted++
		d.mu.Unlock()
		return
	}
	if d.muted > 0 {
		args = append(args, "suppressed", d.muted)
	}
	d.lastWarn, d.muted = now, 0
	d.mu.Unlock()
	d.opts.Log.Warn(msg, args...)
}
