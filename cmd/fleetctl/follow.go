package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"github.com/robotfleet/fleetlink/protocol"
)

const (
	// followQueueBytes caps what --follow buffers; progress is at most 4/s.
	followQueueBytes = 4 << 20
	// finalStateGrace is how long --follow waits, after a session's final
	// event, for the session.state that carries the result (the agent
	// publishes it right after); then the event alone decides.
	finalStateGrace = 5 * time.Second
)

// follower starts a session and follows it to its end over its own
// connection: the session's events and retained state, and the robot's
// status. It subscribes before the command leaves, so no event is missed,
// and again on every reconnect, when the retained state catches it up.
type follower struct {
	mc      *mqttConfig
	robot   string
	session string
	bar     *progressBar
	// attachWait, when following a session started elsewhere (start is
	// nil), is how long to wait for its first state or event before
	// calling it unknown.
	attachWait time.Duration
}

// taggedMsg marks a message that arrived before the start command was
// accepted: a retained state then belongs to an earlier use of the id.
type taggedMsg struct {
	mqtt.Message
	early bool
}

// run follows the session to its end. start sends start_session and
// returns the status it answered; nil attaches to a session that exists
// already (its retained state is then the news, not a stale leftover).
func (f *follower) run(ctx context.Context, start func(context.Context, mqtt.Client) (string, error)) (*protocol.SessionState, error) {
	tp := f.mc.Topics
	q := newMsgQueue(followQueueBytes)
	var started atomic.Bool
	started.Store(start == nil)
	push := func(_ mqtt.Client, m mqtt.Message) { q.push(taggedMsg{m, !started.Load()}) }
	sessionFilters := map[string]byte{
		tp.SessionEvents(f.robot, f.session): protocol.KindSessionEvents.QoS(),
		tp.SessionState(f.robot, f.session):  protocol.KindSessionState.QoS(),
	}
	subscribed := make(chan error, 1)
	onConnect := func(c mqtt.Client) {
		filters := map[string]byte{}
		for k, v := range sessionFilters {
			filters[k] = v
		}
		if started.Load() {
			filters[tp.Status(f.robot)] = protocol.KindStatus.QoS()
		}
		tok := c.SubscribeMultiple(filters, push)
		go func() { // never wait inside a paho callback
			err := mqttkit.Wait(ctx, tok, f.mc.ConnectTimeout)
			select {
			case subscribed <- err:
			default:
			}
		}()
	}
	onLost := func(_ mqtt.Client, err error) {
		f.bar.note(cleanf("connection lost: %v; reconnecting", err))
	}
	client, err := f.mc.connect(ctx, "follow", true, onConnect, onLost)
	if err != nil {
		return nil, err
	}
	defer client.Disconnect(250)
	select {
	case err := <-subscribed:
		if err != nil {
			return nil, fmt.Errorf("subscribe to session %s: %w", f.session, err)
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}

	status := "following"
	var unknown <-chan time.Time // attaching: no news of the session within attachWait
	if start != nil {
		if status, err = start(ctx, client); err != nil {
			return nil, err
		}
		started.Store(true)
	} else {
		unknown = time.After(f.attachWait)
	}
	// The robot's status, for a note when it goes away mid-session; call
	// subscribed it with its own handler, this takes the route over.
	if err := mqttkit.Wait(ctx, client.Subscribe(tp.Status(f.robot), protocol.KindStatus.QoS(), push), f.mc.ConnectTimeout); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", tp.Status(f.robot), err)
	}
	f.bar.note(cleanf("session %s on %s: %s", f.session, f.robot, status))
	defer f.bar.done()

	var (
		last     protocol.SessionState // the latest state, progress folded in
		final    *protocol.Event       // completed, failed or cancelled, awaiting its state
		grace    <-chan time.Time
		online   = true
		accepted = time.Now()
	)
	last.Status = status
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-subscribed: // a reconnect's resubscription; the retained state follows
			if err != nil {
				f.bar.note(cleanf("resubscribe after reconnect: %v; the outcome may come late", err))
			}
		case <-grace:
			st := stateFromFinal(last, final)
			return &st, nil
		case <-unknown:
			return nil, fmt.Errorf("%w: no state or event of session %s on %s within %s", errUnknownSession, f.session, f.robot, f.attachWait)
		case m := <-q.ch:
			q.done(m)
			tm := m.(taggedMsg)
			if tm.early && tm.Retained() {
				continue // an earlier session's retained state under the same id
			}
			ev, err := protocol.Decode(m.Payload())
			if err != nil {
				continue
			}
			if tpc, err := tp.Parse(m.Topic()); err != nil || tpc.Matches(ev) != nil {
				continue
			}
			if ev.Session != "" {
				unknown = nil // the session exists
			}
			switch d := ev.Data.(type) {
			case protocol.RobotStatus:
				if now := d.State == "online"; now != online {
					online = now
					if now {
						f.bar.note(cleanf("robot %s is back online", f.robot))
					} else {
						f.bar.note(cleanf("robot %s went offline (%s); waiting for it", f.robot, d.Reason))
					}
				}
			case protocol.SessionState:
				if d.Finished() {
					return &d, nil
				}
				last = d
				f.bar.update(d.Status, d.Percent, d.Stage, d.Message, d.EtaS, elapsed(d.StartedAt, accepted))
			case protocol.SessionQueued:
				last.Status = protocol.StatusQueued
				f.bar.update(last.Status, 0, "", fmt.Sprintf("position %d", d.Position), nil, 0)
			case protocol.SessionStarted:
				last.Status, last.Pipeline, last.Model = protocol.StatusRunning, d.Pipeline, d.Model
				f.bar.update(last.Status, 0, "", "", d.EstimatedDurationS, 0)
			case protocol.SessionProgress:
				last.Status, last.Percent, last.Stage, last.Message, last.EtaS = protocol.StatusRunning, d.Percent, d.Stage, d.Message, d.EtaS
				f.bar.update(last.Status, d.Percent, d.Stage, d.Message, d.EtaS, d.ElapsedS)
			case protocol.SessionCompleted, protocol.SessionFailed, protocol.SessionCancelled:
				if final == nil {
					final = ev
					grace = time.After(finalStateGrace)
				}
			}
		}
	}
}

// elapsed is the seconds since a session started (or since it was accepted).
func elapsed(startedAt *protocol.Time, accepted time.Time) float64 {
	if startedAt != nil {
		return time.Since(startedAt.Time).Seconds()
	}
	return time.Since(accepted).Seconds()
}

// stateFromFinal builds the final state from a final event when the
// session.state that should follow it did not come.
func stateFromFinal(last protocol.SessionState, ev *protocol.Event) protocol.SessionState {
	st := last
	st.FinishedAt = &ev.TS
	switch d := ev.Data.(type) {
	case protocol.SessionCompleted:
		st.Status, st.Percent, st.Result = protocol.StatusCompleted, 100, &d.Result
	case protocol.SessionFailed:
		st.Status, st.Error = protocol.StatusFailed, &d.Error
	case protocol.SessionCancelled:
		st.Status = protocol.StatusCancelled
	}
	return st
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// progressBar shows a session's progress on a terminal, redrawn in place;
// on anything else (a log, a pipe) it prints a line when the status or
// stage changes or the progress passes another tenth.
type progressBar struct {
	w      io.Writer
	tty    bool
	width  int // of the bar itself, in cells
	maxMsg int // runes of the progress message shown

	mu    sync.Mutex // guards drawn and key: notes come from paho's goroutines too
	drawn bool       // tty: a bar is on the current line
	key   string     // not tty: status, stage and tenth of the last line
}

func newProgressBar(w io.Writer) *progressBar {
	return &progressBar{w: w, tty: isTerminal(w), width: 24, maxMsg: 40}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// update shows the latest progress. Every text is the robot's: cleaned.
func (b *progressBar) update(status string, pct float64, stage, msg string, eta *float64, elapsedS float64) {
	pct = math.Max(0, math.Min(100, pct))
	stage, msg = clean(stage), clip(clean(msg), b.maxMsg)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tty {
		key := fmt.Sprintf("%s|%s|%d", status, stage, int(pct/10))
		if key == b.key {
			return
		}
		b.key = key
		fmt.Fprintln(b.w, b.line(status, pct, stage, msg, eta, elapsedS))
		return
	}
	fmt.Fprintf(b.w, "\r\x1b[K%s", b.line(status, pct, stage, msg, eta, elapsedS))
	b.drawn = true
}

func (b *progressBar) line(status string, pct float64, stage, msg string, eta *float64, elapsedS float64) string {
	filled := int(pct / 100 * float64(b.width))
	bar := strings.Repeat("#", filled) + strings.Repeat(".", b.width-filled)
	s := fmt.Sprintf("[%s] %5.1f%% %s", bar, pct, status)
	if stage != "" {
		s += " " + stage
	}
	if msg != "" {
		s += ": " + msg
	}
	if elapsedS > 0 {
		s += " elapsed " + secs(elapsedS)
	}
	if eta != nil {
		s += " ETA " + secs(*eta)
	}
	return s
}

// note prints a line of its own, above a bar being drawn.
func (b *progressBar) note(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprint(b.w, "\r\x1b[K")
		b.drawn = false
	}
	fmt.Fprintln(b.w, "fleetctl: "+s)
}

// done ends the bar's line.
func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.drawn {
		fmt.Fprintln(b.w)
		b.drawn = false
	}
}

// secs renders seconds for people, as ago does.
func secs(s float64) string { return ago(time.Duration(s * float64(time.Second))) }

// clip shortens s to n runes with an ellipsis.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
