package wsapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/hub"
)

// The writer goroutine lingers drainLinger after the queue runs empty
// (frames that keep coming reuse it), then exits, so an idle client holds no
// goroutine; it must exit although its timer is armed only once.
func TestWriterLingersThenExits(t *testing.T) {
	a, err := auth.New(auth.Options{})
	require.NoError(t, err)
	h, err := New(Options{Hub: hub.New(hub.Options{}), Auth: a})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	defer ws.Close()
	_, _, err = ws.ReadMessage() // connected
	require.NoError(t, err)
	h.mu.Lock()
	var c *client
	for k := range h.clients {
		c = k
	}
	h.mu.Unlock()
	require.NotNil(t, c)

	// Pings every 20 ms for 300 ms: each pong is written, and the writer
	// never sat idle for a whole linger.
	for range 15 {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping","ref":1}`)))
		_, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Contains(t, string(msg), `"pong"`)
		require.True(t, c.writing.Load(), "the writer left before its linger")
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool { return !c.writing.Load() }, 2*time.Second, 10*time.Millisecond,
		"an idle client's writer exits after the linger")
	// And a frame after that starts a writer again.
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping","ref":2}`)))
	_, msg, err := ws.ReadMessage()
	require.NoError(t, err)
	require.Contains(t, string(msg), `"pong"`)
}
