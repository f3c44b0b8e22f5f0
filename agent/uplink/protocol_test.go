package uplink_test

import (
	"bytes"
	"io"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/agent/uplink"
)

// One connection epoch is one TCP connection. A broker that accepts TCP but
// never answers CONNECT (a network hole, an overloaded broker) times each
// attempt out: paho, left to pick the protocol, retries such a handshake as
// MQTT 3.1 on a second connection with the same Will, whose late Will would
// carry the epoch of the connection that replaced it.
func TestOneConnectionPerEpoch(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var connects [][]byte // the bytes each connection sent before it closed
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c) // until the client gives up
				mu.Lock()
				connects = append(connects, b)
				mu.Unlock()
			}()
		}
	}()
	startOpts(t, uplink.Options{Brokers: []string{"tcp://" + ln.Addr().String()}, ConnectTimeout: 300 * time.Millisecond})
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(connects) >= 4
	}, 20*time.Second, 20*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	epoch := regexp.MustCompile(`"epoch":(\d+)`)
	seen := map[string]int{}
	for i, b := range connects {
		require.True(t, bytes.Contains(b, []byte("MQTT\x04")), "connection %d is not an MQTT 3.1.1 CONNECT: %q", i, b)
		m := epoch.FindSubmatch(b)
		require.NotNil(t, m, "connection %d: no epoch in the Will: %q", i, b)
		seen[string(m[1])]++
		require.Equal(t, 1, seen[string(m[1])], "epoch %s was sent on two TCP connections", m[1])
	}
}
