// Package history keeps the fleet's events in a JetStream stream, so that a
// fleet-relay that starts, restarts or joins as a new replica rebuilds its
// caches and rings from the stream before it reports ready, and a since_seq
// resume older than the relay's own ring is served from the stream.
//
// The stream captures, straight from the broker, what robots publish over
// NATS's MQTT gateway: the gateway turns each MQTT topic into a NATS subject
// (fleet/v1/robots/r-1/status → fleet.v1.robots.r-1.status), and a stream on
// those subjects keeps them whether or not any relay is connected. Metrics
// (latest-only, 1 Hz per robot) and commands/replies are not kept.
package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure the history store. Zero values take the defaults noted.
type Options struct {
	// URLs are NATS client URLs (FLEET_RELAY_NATS_URL, comma-separated). Required.
	URLs []string
	// Username and Password authenticate to NATS (empty: none).
	Username, Password string
	// Prefix is the topic prefix. Zero value means "fleet".
	Prefix string
	// Stream is the JetStream stream name. Zero value means "FLEET_HISTORY".
	Stream string
	// MaxAge bounds how long events are kept. Zero value means 24h.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; the oldest events go first.
	// Zero value means 1 GiB.
	MaxBytes int64
	// Replicas is the stream's replica count (3 on a 3-node cluster).
	// Zero value means 1.
	Replicas int
	// Logger; zero value means slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() error {
	if len(o.URLs) == 0 {
		return errors.New("history: nats url: required")
	}
	if o.Prefix == "" {
		o.Prefix = "fleet"
	}
	if o.Stream == "" {
		o.Stream = "FLEET_HISTORY"
	}
	if o.MaxAge == 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 1 << 30
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.MaxAge < 0:
		return errors.New("history: max_age: must be positive")
	case o.MaxBytes < 0:
		return errors.New("history: max_bytes: must be positive")
	case o.Replicas < 1 || o.Replicas > 5:
		return errors.New("history: replicas: must be 1..5")
	}
	return nil
}

// Store is an open history stream.
type Store struct {
	o      Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

// Open connects to NATS and creates the stream when it is missing (an
// existing stream keeps its configuration: operators may have tuned it).
func Open(ctx context.Context, o Options) (*Store, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.Name("fleet-relay history"), nats.MaxReconnects(-1)}
	if o.Username != "" {
		opts = append(opts, nats.UserInfo(o.Username, o.Password))
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("history: connect %s: %w", strings.Join(o.URLs, ","), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("history: jetstream: %w", err)
	}
	cfg := jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "fleet-relay: the fleet's events, replayed by relays on start and for resumes",
		Subjects:    Subjects(o.Prefix),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      o.MaxAge,
		MaxBytes:    o.MaxBytes,
		MaxMsgSize:  256 << 10, // spec §2: payloads are at most 256 KiB
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  2 * time.Minute,
	}
	st, err := js.Stream(ctx, o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(ctx, cfg)
		if err == nil {
			o.Logger.Info("history stream created", "stream", o.Stream, "max_age", o.MaxAge, "max_bytes", o.MaxBytes, "replicas", o.Replicas)
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("history: stream %s: %w", o.Stream, err)
	}
	return &Store{o: o, nc: nc, js: js, stream: st}, nil
}

// Close closes the NATS connection.
func (s *Store) Close() { s.nc.Close() }

// Subjects are the stream's subjects for a topic prefix: every robot's
// status, alerts, notifications and session events and state.
func Subjects(prefix string) []string {
	base := TopicToSubject(prefix) + ".v1.robots.*."
	return []string{base + "status", base + "alerts", base + "notifications",
		base + "sessions.*.events", base + "sessions.*.state"}
}

// TopicToSubject maps an MQTT topic (without wildcards) to the NATS subject
// NATS's MQTT gateway publishes it on: "." becomes "//", "/" becomes ".".
func TopicToSubject(topic string) string {
	toks := strings.Split(topic, "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(t, ".", "//")
	}
	return strings.Join(toks, ".")
}

// SubjectToTopic is the inverse of TopicToSubject.
func SubjectToTopic(subject string) string {
	toks := strings.Split(subject, ".")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(t, "//", ".")
	}
	return strings.Join(toks, "/")
}

// Replay delivers the events the stream holds after stream sequence after
// (0: from the oldest), oldest first, up to the last one stored when Replay
// began, to fn (topic, payload). It returns the stream sequence it reached
// (pass it back to catch up later) and how many events it delivered.
func (s *Store) Replay(ctx context.Context, after uint64, fn func(topic string, payload []byte)) (last uint64, n int, err error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return after, 0, fmt.Errorf("history: replay: %w", err)
	}
	if info.State.Msgs == 0 || info.State.LastSeq <= after {
		return after, 0, nil
	}
	last = after
	n, err = s.scan(ctx, "", after+1, info.State.LastSeq, func(subj string, seq uint64, data []byte) bool {
		fn(SubjectToTopic(subj), data)
		last = seq
		return true
	})
	return last, n, err
}

// GapDropped is the gap reason when the stream dropped events (its
// max_bytes or max_age) before the relay read them.
const GapDropped = "history_dropped"

// LastSeq is the stream sequence of the newest stored event (0: none).
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("history: info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Follow delivers every event stored after stream sequence after, in
// stream order and as it is stored, to fn until ctx ends: the relay's live
// path when history is on. The stream holds what the broker took from the
// robots whether or not this relay was connected, and an ordered consumer
// resumes after a NATS reconnect from the last sequence it delivered, so
// nothing is skipped. gap is told when the stream no longer held the next
// event (aged out or discarded before it was read): from..to were missed.
// fn also gets the event's stream sequence.
func (s *Store) Follow(ctx context.Context, after uint64, fn func(topic string, payload []byte, seq uint64), gap func(from, to uint64)) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("history: follow: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("history: follow: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	next := after + 1
	for {
		m, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.o.Logger.Warn("history: follow", "err", err)
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			s.o.Logger.Warn("history: follow: no metadata", "err", err)
			continue
		}
		seq := md.Sequence.Stream
		if seq < next {
			continue // redelivered after a consumer reset
		}
		if seq > next {
			gap(next, seq-1)
		}
		next = seq + 1
		fn(SubjectToTopic(m.Subject()), m.Data(), seq)
	}
}

// scan reads the stream (only filter's subjects when filter is not empty)
// until stream sequence last, calling fn until it returns false.
func (s *Store) scan(ctx context.Context, filter string, from, last uint64, fn func(subject string, seq uint64, data []byte) bool) (int, error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filterList(filter), DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("history: consumer: %w", err)
	}
	n := 0
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return n, fmt.Errorf("history: fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return n, fmt.Errorf("history: metadata: %w", err)
			}
			n++
			if !fn(m.Subject(), md.Sequence.Stream, m.Data()) || md.Sequence.Stream >= last {
				return n, nil
			}
			if md.NumPending == 0 {
				return n, nil
			}
		}
		if err := batch.Error(); err != nil {
			return n, fmt.Errorf("history: fetch: %w", err)
		}
		if got == 0 {
			return n, nil // nothing more for this filter
		}
		if err := ctx.Err(); err != nil {
			return n, err
		}
	}
}

func filterList(f string) []string {
	if f == "" {
		return nil
	}
	return []string{f}
}

// Since returns the events of robot (and of one session when session is not
// empty) with seq greater than since, oldest first, at most max events
// (0: no cap). complete is false when the stream no longer holds the event
// right after since (it was aged out or never stored), in which case the
// caller must say recovered: false.
func (s *Store) Since(ctx context.Context, robot, session string, since int64, max int) (events [][]byte, complete bool, err error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("history: since: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, false, nil
	}
	// NATS 2.9 wants each consumer filter inside one of the stream's
	// subjects, so the robot's (or session's) subjects are read one by one
	// and merged by seq.
	base := s.o.Prefix + "/v1/robots/" + robot + "/"
	filters := []string{base + "status", base + "alerts", base + "notifications",
		base + "sessions/*/events", base + "sessions/*/state"}
	if session != "" {
		filters = []string{base + "sessions/" + session + "/events", base + "sessions/" + session + "/state"}
	}
	type ev struct {
		seq  int64
		data []byte
	}
	var all []ev
	var minSeq int64 = -1
	for _, f := range filters {
		_, err = s.scan(ctx, TopicToSubject(f), 0, info.State.LastSeq, func(_ string, _ uint64, data []byte) bool {
			seq, ok := seqOf(data)
			if !ok {
				return true
			}
			if minSeq < 0 || seq < minSeq {
				minSeq = seq
			}
			if seq > since {
				all = append(all, ev{seq, bytes.Clone(data)})
			}
			return true
		})
		if err != nil {
			return nil, false, err
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].seq < all[j].seq })
	for _, e := range all {
		if max > 0 && len(events) == max {
			break
		}
		events = append(events, e.data)
	}
	// The stream covers since when it holds an event at or before it.
	return events, minSeq >= 0 && minSeq <= since+1, nil
}

func seqOf(data []byte) (int64, bool) {
	var e struct {
		Seq *int64 `json:"seq"`
	}
	if json.Unmarshal(data, &e) != nil || e.Seq == nil {
		return 0, false
	}
	return *e.Seq, true
}
