// Package spool is the robot agent's durable outbox: every QoS 1 event the
// agent publishes is written to a bbolt file, with its seq, before the
// uplink sends it, and is deleted only after the broker's PUBACK. The spool
// is the source of truth for delivery; paho's own store stays in memory.
//
// It also owns the robot's seq sequencer (spec §1): a persistent high-water
// mark reserved in blocks, so seq never goes backwards across restarts
// (kill -9 included) without an fsync per metric.
//
// The spool is capped in bytes. When a new record does not fit, it drops
// session.progress events first, then robot.notification events, then the
// oldest of the rest, counting every drop.
package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// Options configures an Outbox.
type Options struct {
	// Path of the bbolt file. Required.
	Path string
	// MaxBytes caps the records the spool holds (topic + payload + 3 bytes
	// each). Zero means 64 MiB.
	MaxBytes int64
	// SeqBlock is how many seqs are reserved with one fsync. Zero means 1000.
	SeqBlock int64
	// Topics builds the topic of each event. Zero value means prefix "fleet".
	Topics protocol.Topics
	// NoSync skips the fsync of each commit: records then survive kill -9
	// but not a power cut. Default false (every commit is fsynced).
	NoSync bool
	// CompactAbove: when the spool becomes empty and its file is larger
	// than this, the file is rewritten small (an outage can grow it to
	// MaxBytes plus overhead; bbolt never shrinks a file). Zero means 8 MiB.
	CompactAbove int64
	// LockTimeout is how long Open waits for another process's file lock.
	// Zero means 1s.
	LockTimeout time.Duration
	// Logger receives drop warnings. Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) fillDefaults() {
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	if o.SeqBlock == 0 {
		o.SeqBlock = 1000
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = time.Second
	}
	if o.CompactAbove == 0 {
		o.CompactAbove = 8 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Class orders what is dropped first when the spool is full.
type Class uint8

// Drop classes, dropped in this order.
const (
	ClassOther        Class = iota // dropped last, oldest first
	ClassNotification              // robot.notification
	ClassProgress                  // session.progress, dropped first
	numClasses
)

func (c Class) String() string {
	switch c {
	case ClassProgress:
		return "progress"
	case ClassNotification:
		return "notification"
	}
	return "other"
}

// ClassOf returns the drop class of an event type.
func ClassOf(typ string) Class {
	switch typ {
	case protocol.TypeSessionProgress:
		return ClassProgress
	case protocol.TypeRobotNotification:
		return ClassNotification
	}
	return ClassOther
}

// Entry is one spooled publish.
type Entry struct {
	Seq      int64
	Topic    string
	QoS      byte
	Retained bool
	Class    Class
	Payload  []byte // empty for a retained clear
}

// Stats is a snapshot of the spool's counters.
type Stats struct {
	Depth   int64             // records waiting
	Bytes   int64             // bytes they take (record sizes)
	Dropped [numClasses]int64 // dropped per class, over the spool file's life (persisted)
	// DropsReported is the drop total the agent has already reported
	// (MarkDropsReported); persisted so a restart does not report twice.
	DropsReported int64
	Compactions   int64 // file rewrites since Open
	Written       int64 // records written since Open
	Acked         int64 // records acknowledged since Open
}

// TotalDropped is the sum of Dropped.
func (s Stats) TotalDropped() int64 {
	var n int64
	for _, d := range s.Dropped {
		n += d
	}
	return n
}

var (
	bucketOut  = []byte("out")  // seq → record
	bucketMeta = []byte("meta") // seq_hw, drop counters → int64
	keySeqHW   = []byte("seq_hw")
	keyDropped = [numClasses][]byte{[]byte("dropped_other"), []byte("dropped_notification"), []byte("dropped_progress")}
	keyDropRep = []byte("drops_reported")
	keyEpoch   = []byte("conn_epoch") // the last MQTT connection epoch handed out
	// one index bucket per droppable class: seq → nothing
	bucketIdx = [numClasses][]byte{nil, []byte("idx-notification"), []byte("idx-progress")}
)

// Outbox is the durable, byte-capped, ordered outbox. It satisfies the
// session manager's Emitter (Emit, ClearRetained) and the uplink's Source
// (Read, Ack, Notify).
type Outbox struct {
	opts   Options
	topics protocol.Topics
	log    *slog.Logger
	boltOp *bolt.Options

	// dbMu guards the db handle against Compact swapping it: every
	// transaction holds it for reading. Lock order: mu before dbMu; never
	// take mu while holding dbMu.
	dbMu sync.RWMutex
	db   *bolt.DB

	// mu guards next, hw, pending, closed and stats. It is held while a seq
	// is assigned and its write is queued, so queue order is seq order.
	mu      sync.Mutex
	next    int64 // next seq to hand out
	hw      int64 // highest reserved seq, persisted
	pending []*writeReq
	closed  bool
	stats   Stats

	kick   chan struct{} // wakes the writer; cap 1
	notify chan struct{} // signalled after records were committed; cap 1
	done   chan struct{} // closed when the writer has exited
	// dropWarn rate-limits the drop warning.
	dropWarn rateLimit
}

type writeReq struct {
	seq  int64
	rec  []byte
	cls  Class
	done chan error
}

// Open opens (creating) the spool file, recovers its counters and
// reserves the next block of seqs.
func Open(opts Options) (*Outbox, error) {
	opts.fillDefaults()
	if opts.Path == "" {
		return nil, errors.New("open spool: no path")
	}
	_ = os.Remove(opts.Path + ".compact") // left by a crash during Compact
	boltOp := &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true, // smaller commits; the freelist is rebuilt on open
		FreelistType:   bolt.FreelistMapType,
	}
	db, err := bolt.Open(opts.Path, 0o600, boltOp)
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("open spool %s: %w", opts.Path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", opts.Path, err)
	}
	o := &Outbox{
		opts: opts, topics: opts.Topics, log: opts.Logger.With("component", "spool"), db: db, boltOp: boltOp,
		kick: make(chan struct{}, 1), notify: make(chan struct{}, 1), done: make(chan struct{}),
		dropWarn: rateLimit{every: time.Minute},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		out, meta := tx.Bucket(bucketOut), tx.Bucket(bucketMeta)
		hw := getInt(meta, keySeqHW)
		for c := range o.stats.Dropped {
			o.stats.Dropped[c] = getInt(meta, keyDropped[c])
		}
		o.stats.DropsReported = getInt(meta, keyDropRep)
		// Recover depth and bytes; the highest stored seq can never exceed
		// hw, but take it into account should the file have been edited.
		err = out.ForEach(func(k, v []byte) error {
			o.stats.Depth++
			o.stats.Bytes += int64(len(v))
			if s := int64(binary.BigEndian.Uint64(k)); s > hw {
				hw = s
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Every seq up to hw may have been used: start above it.
		o.next = hw + 1
		o.hw = hw + opts.SeqBlock
		return meta.Put(keySeqHW, u64(o.hw))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool %s: %w", opts.Path, err)
	}
	go o.writer()
	return o, nil
}

// Close stops the writer and closes the file. Pending Emits fail with ErrClosed.
func (o *Outbox) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	o.mu.Unlock()
	close(o.kick)
	<-o.done
	o.dbMu.Lock()
	defer o.dbMu.Unlock()
	return o.db.Close()
}

func createBuckets(tx *bolt.Tx) error {
	for _, b := range append([][]byte{bucketOut, bucketMeta}, bucketIdx[1:]...) {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	return nil
}

func getInt(b *bolt.Bucket, k []byte) int64 {
	if v := b.Get(k); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func u64(v int64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return b[:]
}

// nextSeqLocked hands out the next seq, reserving a new block when the
// current one is used up (one small fsync per SeqBlock seqs).
func (o *Outbox) nextSeqLocked() (int64, error) {
	if o.next > o.hw {
		hw := o.next + o.opts.SeqBlock - 1
		o.dbMu.RLock()
		err := o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySeqHW, u64(hw)) })
		o.dbMu.RUnlock()
		if err != nil {
			return 0, fmt.Errorf("reserve seq block: %w", err)
		}
		o.hw = hw
	}
	s := o.next
	o.next++
	return s, nil
}

// NextSeq returns a fresh seq for an event that is published directly and
// not spooled (robot.metrics, robot.status, the Last Will).
func (o *Outbox) NextSeq() (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, ErrClosed
	}
	return o.nextSeqLocked()
}

// NextEpoch increments and returns the persisted MQTT connection epoch
// (robot.status data.epoch): one per connection attempt, increasing across
// restarts, kill -9 included (the write is synced before it returns). It
// lives in the spool file because the spool's meta survives compaction.
func (o *Outbox) NextEpoch() (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, ErrClosed
	}
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	var e int64
	err := o.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		e = getInt(m, keyEpoch) + 1
		return m.Put(keyEpoch, u64(e))
	})
	if err != nil {
		return 0, fmt.Errorf("spool: next epoch: %w", err)
	}
	return e, nil
}

// Emit assigns ev.Seq, encodes and validates ev and stores it durably
// before it returns: a nil error means the event survives kill -9 (and a
// power cut, unless NoSync). The uplink sends it at QoS 1, retained iff its
// topic kind is retained, in seq order.
func (o *Outbox) Emit(ev *protocol.Event) error {
	topic, err := o.topics.For(ev)
	if err != nil {
		return fmt.Errorf("emit %s: %w", ev.Type, err)
	}
	tp, err := o.topics.Parse(topic)
	if err != nil {
		return fmt.Errorf("emit %s: %w", ev.Type, err)
	}
	if tp.Kind.QoS() != 1 {
		return fmt.Errorf("emit %s: %w", ev.Type, ErrNotSpooled)
	}
	cls := ClassOf(ev.Type)
	return o.enqueue(cls, topic, tp.Kind.Retained(), func(seq int64) ([]byte, error) {
		ev.Seq = seq
		return protocol.Encode(ev)
	})
}

// ClearRetained durably queues an empty retained QoS 1 publish on topic,
// which removes the broker's retained message there.
func (o *Outbox) ClearRetained(topic string) error {
	if _, err := o.topics.Parse(topic); err != nil {
		return fmt.Errorf("clear retained: %w", err)
	}
	return o.enqueue(ClassOther, topic, true, func(int64) ([]byte, error) { return nil, nil })
}

func (o *Outbox) enqueue(cls Class, topic string, retained bool, payload func(seq int64) ([]byte, error)) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return ErrClosed
	}
	seq, err := o.nextSeqLocked()
	if err != nil {
		o.mu.Unlock()
		return err
	}
	p, err := payload(seq)
	if err != nil {
		o.mu.Unlock()
		return fmt.Errorf("emit: %w", err)
	}
	rec := encodeRecord(cls, 1, retained, topic, p)
	if int64(len(rec)) > o.opts.MaxBytes {
		o.mu.Unlock()
		return fmt.Errorf("emit: %w: %d bytes, cap %d", ErrTooLarge, len(rec), o.opts.MaxBytes)
	}
	req := &writeReq{seq: seq, rec: rec, cls: cls, done: make(chan error, 1)}
	o.pending = append(o.pending, req)
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
	return <-req.done
}

// writer commits queued records in groups: one transaction (one fsync)
// for every Emit that arrived while the previous commit ran.
func (o *Outbox) writer() {
	defer close(o.done)
	for range o.kick {
		o.flushPending()
	}
	o.flushPending()
	o.mu.Lock()
	for _, r := range o.pending {
		r.done <- ErrClosed
	}
	o.pending = nil
	o.mu.Unlock()
}

func (o *Outbox) flushPending() {
	o.mu.Lock()
	batch := o.pending
	o.pending = nil
	bytesNow := o.stats.Bytes
	o.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	var dropped [numClasses]int64
	var droppedBytes, addedBytes int64
	o.dbMu.RLock()
	err := o.db.Update(func(tx *bolt.Tx) error {
		dropped, droppedBytes, addedBytes = [numClasses]int64{}, 0, 0
		out := tx.Bucket(bucketOut)
		size := bytesNow
		for _, r := range batch {
			for size+int64(len(r.rec)) > o.opts.MaxBytes {
				cls, n, err := evictOne(tx)
				if err != nil {
					return err
				}
				if n == 0 {
					break // nothing left to drop; the record fits by construction
				}
				dropped[cls]++
				droppedBytes += n
				size -= n
			}
			if err := out.Put(u64(r.seq), r.rec); err != nil {
				return err
			}
			if b := bucketIdx[r.cls]; b != nil {
				if err := tx.Bucket(b).Put(u64(r.seq), nil); err != nil {
					return err
				}
			}
			size += int64(len(r.rec))
			addedBytes += int64(len(r.rec))
		}
		// Drop counters persist with the drops, so they survive kill -9.
		meta := tx.Bucket(bucketMeta)
		for c, d := range dropped {
			if d > 0 {
				if err := meta.Put(keyDropped[c], u64(getInt(meta, keyDropped[c])+d)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	o.dbMu.RUnlock()
	if err != nil {
		err = fmt.Errorf("spool write: %w", err)
	}
	o.mu.Lock()
	if err == nil {
		var nd int64
		for c, d := range dropped {
			o.stats.Dropped[c] += d
			nd += d
		}
		o.stats.Depth += int64(len(batch)) - nd
		o.stats.Bytes += addedBytes - droppedBytes
		o.stats.Written += int64(len(batch))
		if nd > 0 && o.dropWarn.allow() {
			o.log.Warn("spool full: dropped events", "dropped_now", nd, "dropped_total", o.stats.TotalDropped(),
				"progress", o.stats.Dropped[ClassProgress], "notification", o.stats.Dropped[ClassNotification],
				"other", o.stats.Dropped[ClassOther], "max_bytes", o.opts.MaxBytes)
		}
	}
	o.mu.Unlock()
	for _, r := range batch {
		r.done <- err
	}
	if err == nil {
		select {
		case o.notify <- struct{}{}:
		default:
		}
	}
}

// evictOne deletes one record in drop order and returns its class and size
// (0 when the spool is empty).
func evictOne(tx *bolt.Tx) (Class, int64, error) {
	out := tx.Bucket(bucketOut)
	for _, cls := range []Class{ClassProgress, ClassNotification} {
		idx := tx.Bucket(bucketIdx[cls])
		if k, _ := idx.Cursor().First(); k != nil {
			k = bytes.Clone(k)
			n := int64(len(out.Get(k)))
			if err := idx.Delete(k); err != nil {
				return 0, 0, err
			}
			if err := out.Delete(k); err != nil {
				return 0, 0, err
			}
			return cls, n, nil
		}
	}
	k, v := out.Cursor().First()
	if k == nil {
		return 0, 0, nil
	}
	k = bytes.Clone(k)
	n := int64(len(v))
	cls := Class(v[0])
	if cls >= numClasses {
		cls = ClassOther
	}
	if b := bucketIdx[cls]; b != nil {
		if err := tx.Bucket(b).Delete(k); err != nil {
			return 0, 0, err
		}
	}
	return ClassOther, n, out.Delete(k)
}

// Read returns up to max records with a seq above after, in seq order.
func (o *Outbox) Read(after int64, max int) ([]Entry, error) {
	var es []Entry
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOut).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(es) < max; k, v = c.Next() {
			e, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("seq %d: %w", binary.BigEndian.Uint64(k), err)
			}
			e.Seq = int64(binary.BigEndian.Uint64(k))
			es = append(es, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool read: %w", err)
	}
	return es, nil
}

// Ack deletes acknowledged records in one transaction. Seqs no longer
// held (dropped meanwhile) are ignored.
func (o *Outbox) Ack(seqs ...int64) error {
	if len(seqs) == 0 {
		return nil
	}
	var n, nbytes int64
	o.dbMu.RLock()
	err := o.db.Update(func(tx *bolt.Tx) error {
		n, nbytes = 0, 0
		out := tx.Bucket(bucketOut)
		for _, s := range seqs {
			k := u64(s)
			v := out.Get(k)
			if v == nil {
				continue
			}
			if b := bucketIdx[Class(v[0])%numClasses]; b != nil {
				if err := tx.Bucket(b).Delete(k); err != nil {
					return err
				}
			}
			n++
			nbytes += int64(len(v))
			if err := out.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	o.dbMu.RUnlock()
	if err != nil {
		return fmt.Errorf("spool ack: %w", err)
	}
	o.mu.Lock()
	o.stats.Depth -= n
	o.stats.Bytes -= nbytes
	o.stats.Acked += n
	empty := o.stats.Depth == 0
	o.mu.Unlock()
	if empty {
		if fi, err := os.Stat(o.opts.Path); err == nil && fi.Size() > o.opts.CompactAbove {
			if err := o.Compact(); err != nil {
				o.log.Warn("spool compaction failed", "err", err)
			}
		}
	}
	return nil
}

// Compact rewrites an empty spool as a small new file, keeping the seq
// high-water mark and the drop counters. It does nothing when the spool
// holds records. The new file is written beside the old one and renamed
// over it, so a crash leaves one or the other, never neither.
func (o *Outbox) Compact() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return ErrClosed
	}
	o.dbMu.Lock()
	defer o.dbMu.Unlock()
	var meta [][2][]byte
	empty := true
	err := o.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketOut).Cursor().First(); k != nil {
			empty = false
			return nil
		}
		return tx.Bucket(bucketMeta).ForEach(func(k, v []byte) error {
			meta = append(meta, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
			return nil
		})
	})
	if err != nil || !empty {
		return err
	}
	tmp := o.opts.Path + ".compact"
	_ = os.Remove(tmp)
	ndb, err := bolt.Open(tmp, 0o600, o.boltOp)
	if err != nil {
		return fmt.Errorf("compact spool: %w", err)
	}
	err = ndb.Update(func(tx *bolt.Tx) error {
		if err := createBuckets(tx); err != nil {
			return err
		}
		for _, kv := range meta {
			if err := tx.Bucket(bucketMeta).Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySeqHW, u64(o.hw))
	})
	if cerr := ndb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("compact spool: %w", err)
	}
	if err := o.db.Close(); err != nil {
		return fmt.Errorf("compact spool: %w", err)
	}
	renameErr := os.Rename(tmp, o.opts.Path)
	if renameErr == nil {
		if d, err := os.Open(filepath.Dir(o.opts.Path)); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	// Reopen whichever file is now at Path.
	db, err := bolt.Open(o.opts.Path, 0o600, o.boltOp)
	if err != nil {
		return fmt.Errorf("compact spool: reopen: %w", err)
	}
	o.db = db
	if renameErr != nil {
		return fmt.Errorf("compact spool: %w", renameErr)
	}
	o.stats.Bytes = 0
	o.stats.Compactions++
	return nil
}

// MarkDropsReported records that the drop total n has been reported to
// the fleet (robot.notification), durably.
func (o *Outbox) MarkDropsReported(n int64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dbMu.RLock()
	defer o.dbMu.RUnlock()
	if err := o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyDropRep, u64(n)) }); err != nil {
		return fmt.Errorf("spool: mark drops reported: %w", err)
	}
	o.stats.DropsReported = n
	return nil
}

// Notify is signalled after new records were committed.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Stats returns the spool's counters.
func (o *Outbox) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stats
}

// record layout: class(1) flags(1: bit0-1 qos, bit2 retained) topicLen(2) topic payload
func encodeRecord(cls Class, qos byte, retained bool, topic string, payload []byte) []byte {
	b := make([]byte, 4, 4+len(topic)+len(payload))
	b[0] = byte(cls)
	b[1] = qos & 3
	if retained {
		b[1] |= 4
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(topic)))
	b = append(b, topic...)
	return append(b, payload...)
}

func decodeRecord(v []byte) (Entry, error) {
	if len(v) < 4 {
		return Entry{}, errors.New("corrupt record: short")
	}
	tl := int(binary.BigEndian.Uint16(v[2:]))
	if len(v) < 4+tl {
		return Entry{}, errors.New("corrupt record: topic past the end")
	}
	return Entry{
		Class: Class(v[0]) % numClasses, QoS: v[1] & 3, Retained: v[1]&4 != 0,
		Topic: string(v[4 : 4+tl]), Payload: bytes.Clone(v[4+tl:]),
	}, nil
}

// rateLimit allows one event per period. Not safe for concurrent use:
// callers hold a lock.
type rateLimit struct {
	every time.Duration
	last  time.Time
}

func (r *rateLimit) allow() bool {
	now := time.Now()
	if now.Sub(r.last) < r.every {
		return false
	}
	r.last = now
	return true
}
