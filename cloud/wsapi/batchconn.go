package wsapi

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// batchConn sits under gorilla/websocket and coalesces the frames one
// drain writes into one syscall per batch. gorilla writes every message
// with its own Write; at fan-out rates those syscalls, not the encoding,
// are the relay's cost. Outside a batch (handshake, pings and closes from
// other goroutines, an idle client) writes go straight through.
type batchConn struct {
	net.Conn
	mu       sync.Mutex // guards batching and buf; held across the flush's Write
	batching bool
	buf      *[]byte // pending bytes while batching, from batchPool
}

// batchLimit bounds the bytes held before a flush.
const batchLimit = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchLimit); return &b }}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return c.Conn.Write(p)
	}
	if len(*c.buf)+len(p) > batchLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > batchLimit {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

// begin starts holding writes back.
func (c *batchConn) begin() {
	c.mu.Lock()
	if !c.batching {
		c.batching = true
		c.buf = batchPool.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// end writes what was held back in one Write and stops batching; the
// buffer goes back to the pool, so an idle client holds none.
func (c *batchConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.batching {
		return nil
	}
	err := c.flushLocked()
	c.batching = false
	*c.buf = (*c.buf)[:0]
	batchPool.Put(c.buf)
	c.buf = nil
	return err
}

func (c *batchConn) flushLocked() error {
	if len(*c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// batchingWriter hands gorilla's Upgrade a batchConn when it hijacks the
// connection.
type batchingWriter struct {
	http.ResponseWriter
}

func (w batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &batchConn{Conn: conn}, brw, nil
}

// Unwrap lets http.ResponseController reach the real writer.
func (w batchingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
