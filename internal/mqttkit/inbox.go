package mqttkit

import (
	"context"
	"sync/atomic"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Message is one received MQTT message.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Inbox is the bounded queue between a paho callback (which must never
// block) and the goroutine that handles the messages: capped in entries
// and in payload bytes; what does not fit is dropped and counted.
type Inbox struct {
	ch       chan Message
	maxBytes int64
	bytes    atomic.Int64 // payload bytes queued
	dropped  atomic.Int64
}

// NewInbox returns an inbox of at most entries messages and maxBytes
// payload bytes (both at least 1).
func NewInbox(entries int, maxBytes int64) *Inbox {
	return &Inbox{ch: make(chan Message, max(entries, 1)), maxBytes: max(maxBytes, 1)}
}

// Offer queues m without blocking; it reports false (and counts a drop)
// when the inbox is full.
func (in *Inbox) Offer(m Message) bool {
	n := int64(len(m.Payload))
	if in.bytes.Add(n) > in.maxBytes {
		in.bytes.Add(-n)
		in.dropped.Add(1)
		return false
	}
	select {
	case in.ch <- m:
		return true
	default:
		in.bytes.Add(-n)
		in.dropped.Add(1)
		return false
	}
}

// Handler returns a paho message handler that offers every message.
func (in *Inbox) Handler() mqtt.MessageHandler {
	return func(_ mqtt.Client, m mqtt.Message) {
		in.Offer(Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	}
}

// Recv waits for the next message or ctx's end.
func (in *Inbox) Recv(ctx context.Context) (Message, error) {
	select {
	case m := <-in.ch:
		in.bytes.Add(-int64(len(m.Payload)))
		return m, nil
	case <-ctx.Done():
		return Message{}, ctx.Err()
	}
}

// Len, Bytes and Dropped are the inbox's counters.
func (in *Inbox) Len() int          { return len(in.ch) }
func (in *Inbox) Bytes() int64      { return in.bytes.Load() }
func (in *Inbox) Dropped() int64    { return in.dropped.Load() }
func (in *Inbox) Cap() (int, int64) { return cap(in.ch), in.maxBytes }
