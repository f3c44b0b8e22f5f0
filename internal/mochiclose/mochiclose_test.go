package mochiclose_test

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/robotfleet/fleetlink/internal/mochiclose"
)

// TestCloseWhileClientsChurn closes a broker with many listeners while its
// client map keeps taking writers (as connects and disconnects do): Close
// must return. mochi's own Close walks each listener with GetByListener,
// which read-locks the map twice; a writer between the two hangs it for good
// (mochi#488, which hung a CI run for 15 minutes). With Server.Close here
// this test hangs within a few rounds.
func TestCloseWhileClientsChurn(t *testing.T) {
	for round := range 20 {
		srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			l := listeners.NewTCP(listeners.Config{ID: fmt.Sprintf("l%d", i), Address: "127.0.0.1:0"})
			if err := srv.AddListener(l); err != nil {
				t.Fatal(err)
			}
		}
		if err := srv.Serve(); err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					srv.Clients.Delete("gone") // what every disconnect does
				}
			}()
		}
		closed := make(chan error, 1)
		go func() { closed <- mochiclose.Close(srv) }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("round %d: Close: %v", round, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Close hung while clients churned", round)
		}
		stop.Store(true)
		wg.Wait()
	}
}
