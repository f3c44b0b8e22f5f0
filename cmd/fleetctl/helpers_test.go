package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/protocol"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runFleetctl runs fleetctl as main does and returns its exit code and output.
func runFleetctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// dial connects a paho client to the test broker, with a username and
// password when userPass gives them.
func dial(t *testing.T, url, id string, userPass ...string) mqtt.Client {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetConnectTimeout(5 * time.Second)
	if len(userPass) == 2 {
		opts.SetUsername(userPass[0]).SetPassword(userPass[1])
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(5*time.Second), "connect %s", url)
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// publish publishes and waits for the broker's acknowledgement.
func publish(t *testing.T, c mqtt.Client, topic string, payload []byte, retained bool) {
	t.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	require.True(t, tok.WaitTimeout(5*time.Second), "publish %s", topic)
	require.NoError(t, tok.Error())
}

// encode builds a valid payload from ev with seq set.
func encode(t *testing.T, ev *protocol.Event, seq int64) []byte {
	t.Helper()
	ev.Seq = seq
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	return b
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }
