package hub

import (
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Message is one pre-encoded frame waiting in a client's queue.
type Message struct {
	Room  string
	Type  string    // event type; "" for control frames (subscribed, errors, replies)
	Key   string    // robot id of a robot.metrics frame, for latest-only replacement
	Frame []byte    // the encoded frame, shared by every client of the format: never modify
	TS    time.Time // the event's ts, for the fan-out latency histogram; zero for control frames
	// Stream, when set, produces this message's frames in parts on the
	// consumer's goroutine (a snapshot); Frame is nil and Bytes is what it
	// counts against the cap while queued.
	Stream Stream
	Bytes  int
}

// Stream is a large answer (a snapshot) encoded part by part by whoever
// drains the queue, outside the hub's lock: only one part is in memory at a
// time, and the frames queued after it wait their turn.
type Stream interface {
	// Next appends the frames of the next part to buf and reports whether
	// more parts follow.
	Next(buf [][]byte) ([][]byte, bool)
}

// msgOverhead is what one queued message costs beyond its frame, so that a
// flood of tiny frames is capped too.
const msgOverhead = 64

func (m *Message) size() int { return len(m.Frame) + m.Bytes + msgOverhead }

// PushResult says what Push did with a message.
type PushResult int

// Push results.
const (
	Queued   PushResult = iota // appended
	Replaced                   // replaced an older robot.metrics frame of the same robot and room
	Dropped                    // dropped (session.progress over the high-water mark, robot.metrics over the cap); counted for a dropped notice
	Overflow                   // over the byte cap: the client must be closed as a slow consumer
	Closed                     // the queue is closed
)

// Queue is a client's outgoing queue, capped in bytes. Push never blocks, so
// a slow client never delays the hub or other clients. robot.metrics is
// latest-only: a newer frame replaces the queued one of the same robot and
// room, so a client holds at most one per robot room. Above the high-water
// mark (half the cap) session.progress is dropped (the next progress or
// session.state supersedes it); past the cap, so is robot.metrics. Drops are
// counted per room, to be reported with a dropped notice. Anything else past
// the cap overflows, and the owner closes the client (code 4008). Control frames (answers to the client's own ops) may
// use up to twice the cap: the client asked for them.
type Queue struct {
	max   int
	high  int
	stats *QueueStats
	wake  chan struct{}

	mu      sync.Mutex // guards the fields below
	items   []Message  // items[head:] are queued
	head    int
	bytes   int
	dropped map[string]int // room → frames dropped since the last TakeDropped
	over    bool           // overflowed; stays true
	closed  bool
}

// NewQueue returns a queue capped at maxBytes, counted in stats (nil: a
// private set).
func NewQueue(maxBytes int, stats *QueueStats) *Queue {
	if stats == nil {
		stats = &QueueStats{}
	}
	return &Queue{max: maxBytes, high: maxBytes / 2, stats: stats, wake: make(chan struct{}, 1)}
}

// Wake is signalled (coalesced) whenever something is queued.
func (q *Queue) Wake() <-chan struct{} { return q.wake }

func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func lossy(typ string) bool {
	return typ == protocol.TypeSessionProgress || typ == protocol.TypeRobotMetrics
}

// Push queues m without blocking.
func (q *Queue) Push(m Message) PushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || q.over {
		return Closed
	}
	if m.Type == protocol.TypeRobotMetrics {
		for i := len(q.items) - 1; i >= q.head; i-- {
			it := &q.items[i]
			if it.Type == m.Type && it.Key == m.Key && it.Room == m.Room {
				delta := len(m.Frame) - len(it.Frame)
				*it = m
				q.bytes += delta
				q.stats.Bytes.Add(int64(delta))
				q.stats.Replaced.Add(1)
				return Replaced
			}
		}
	}
	n := m.size()
	switch {
	case q.bytes+n > q.max && lossy(m.Type),
		q.bytes+n > q.high && m.Type == protocol.TypeSessionProgress:
		if q.dropped == nil {
			q.dropped = map[string]int{}
		}
		q.dropped[m.Room]++
		q.stats.Dropped.Add(1)
		return Dropped
	case q.bytes+n > q.max && (m.Type != "" || q.bytes+n > 2*q.max):
		q.over = true
		q.stats.Dropped.Add(1)
		q.signal()
		return Overflow
	}
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	q.items = append(q.items, m)
	q.bytes += n
	q.stats.Bytes.Add(int64(n))
	q.signal()
	return Queued
}

// Pop moves up to maxBytes of queued messages (at least one) into buf and
// returns it. A Stream message is returned alone and stays at the head
// until the consumer reports it finished with Done.
func (q *Queue) Pop(buf []Message, maxBytes int) []Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	taken := 0
	for q.head < len(q.items) {
		m := q.items[q.head]
		if m.Stream != nil {
			if len(buf) == 0 {
				buf = append(buf, m)
			}
			break
		}
		if len(buf) > 0 && taken+m.size() > maxBytes {
			break
		}
		buf = append(buf, m)
		q.items[q.head] = Message{}
		q.head++
		taken += m.size()
	}
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 1024 {
			q.items = nil // give a burst's backing array back
		}
	} else {
		q.signal()
	}
	q.bytes -= taken
	q.stats.Bytes.Add(-int64(taken))
	return buf
}

// Done removes the finished Stream st from the head of the queue.
func (q *Queue) Done(st Stream) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head < len(q.items) && q.items[q.head].Stream == st {
		n := q.items[q.head].size()
		q.items[q.head] = Message{}
		q.head++
		q.bytes -= n
		q.stats.Bytes.Add(-int64(n))
		if q.head < len(q.items) {
			q.signal()
		}
	}
}

// TakeDropped returns and resets the per-room drop counts, once the queue is
// back under the high-water mark (so the notice itself can get through).
func (q *Queue) TakeDropped() map[string]int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.dropped) == 0 || q.bytes > q.high {
		return nil
	}
	d := q.dropped
	q.dropped = nil
	return d
}

// Overflowed reports whether the queue went past its cap.
func (q *Queue) Overflowed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.over
}

// Len returns the queued bytes.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// Close discards what is queued; later pushes return Closed.
func (q *Queue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	q.stats.Bytes.Add(-int64(q.bytes))
	q.items, q.head, q.bytes = nil, 0, 0
	q.signal()
}
