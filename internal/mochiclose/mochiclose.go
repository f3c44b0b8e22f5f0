// Package mochiclose shuts an embedded mochi-mqtt server down without the
// deadlock in its own Close.
//
// mochi v2.7.9's Server.Close disconnects each listener's clients through
// Clients.GetByListener, which takes the clients' read lock twice (RLock, then
// Len's RLock). A client connecting or disconnecting between the two queues a
// writer, the second RLock waits behind it and the broker hangs for good
// (mochi-mqtt/server#488; fixes #489 and #507 are unmerged). Close here does
// the same shutdown with one read lock per listener, then lets Server.Close
// stop the hooks with no listeners left to walk.
package mochiclose

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// sweepEvery is how often Close disconnects clients that finished their
// handshake after their listener was closed (mochi's TCP listener disconnects
// its clients before it stops accepting, and CloseAll waits for every client).
const sweepEvery = 50 * time.Millisecond

// Close stops every listener of s, disconnects their clients, waits for their
// connections to end and then closes s.
func Close(s *mqtt.Server) error {
	var (
		mu   sync.Mutex
		ids  []string
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		s.Listeners.CloseAll(func(id string) {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
			DisconnectListener(s, id)
		})
	}()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-t.C:
		}
		mu.Lock()
		closed := append([]string(nil), ids...)
		mu.Unlock()
		for _, id := range closed {
			if waiting {
				DisconnectListener(s, id)
			} else {
				s.Listeners.Delete(id) // Server.Close then has no listener to walk
			}
		}
	}
	return s.Close()
}

// DisconnectListener disconnects the open clients of one listener, as mochi's
// closeListenerClients does, reading the client map under a single lock.
func DisconnectListener(s *mqtt.Server, listener string) {
	for _, cl := range s.Clients.GetAll() {
		if cl.Net.Listener == listener && !cl.Closed() {
			_ = s.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
