package wsapi

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// countConn records each Write the batchConn makes to the socket.
type countConn struct {
	net.Conn
	writes [][]byte
	err    error
}

func (c *countConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchConnCoalescesABatch(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	// Outside a batch every write goes straight through.
	_, _ = bc.Write([]byte("ping"))
	if len(cc.writes) != 1 {
		t.Fatalf("unbatched write held back: %d writes", len(cc.writes))
	}
	bc.begin()
	for _, f := range []string{"a", "bb", "ccc"} {
		if _, err := bc.Write([]byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	if len(cc.writes) != 1 {
		t.Fatalf("batched frames reached the socket before end: %d writes", len(cc.writes))
	}
	if err := bc.end(); err != nil {
		t.Fatal(err)
	}
	if len(cc.writes) != 2 || string(cc.writes[1]) != "abbccc" {
		t.Fatalf("want one write of the batch in order, got %q", cc.writes)
	}
	if bc.buf != nil {
		t.Fatal("an idle connection still holds a batch buffer")
	}
	// A batch larger than the limit is flushed as it goes, never reordered.
	bc.begin()
	big := bytes.Repeat([]byte("x"), batchLimit-1)
	_, _ = bc.Write(big)
	_, _ = bc.Write([]byte("yz"))
	_ = bc.end()
	got := bytes.Join(cc.writes[2:], nil)
	if !bytes.Equal(got, append(bytes.Clone(big), "yz"...)) || len(cc.writes) != 4 {
		t.Fatalf("over the limit: %d writes, order kept %v", len(cc.writes)-2, bytes.Equal(got, append(big, "yz"...)))
	}
}

func TestBatchConnReportsTheFlushError(t *testing.T) {
	cc := &countConn{}
	bc := &batchConn{Conn: cc}
	bc.begin()
	_, _ = bc.Write([]byte("frame"))
	cc.err = errors.New("broken pipe")
	if err := bc.end(); err == nil {
		t.Fatal("end hid the socket's error")
	}
}
