package spool_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/stretchr/testify/require"
)

func open(t *testing.T, path string, maxBytes int64) *spool.Outbox {
	t.Helper()
	o, err := spool.Open(spool.Options{Path: path, MaxBytes: maxBytes, SeqBlock: 10})
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close() })
	return o
}

func note(i int) *protocol.Event {
	return protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: fmt.Sprintf("n%d", i)})
}

func progress(i int) *protocol.Event {
	return protocol.NewSessionEvent("r-1", "s-1", protocol.SessionProgress{Percent: float64(i % 100), Stage: "q", ElapsedS: 1})
}

func alert(i int) *protocol.Event {
	return protocol.NewEvent("r-1", protocol.RobotAlert{Alert: fmt.Sprintf("a%d", i), Severity: "warning", State: "firing", Message: "m"})
}

func TestEmitReadAckInOrder(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	var ids []string
	for i := range 25 {
		ev := alert(i)
		require.NoError(t, o.Emit(ev))
		ids = append(ids, ev.ID)
	}
	require.NoError(t, o.ClearRetained(protocol.Topics{}.SessionState("r-1", "s-9")))
	es, err := o.Read(0, 100)
	require.NoError(t, err)
	require.Len(t, es, 26)
	for i, e := range es[:25] {
		require.Equal(t, protocol.Topics{}.Alerts("r-1"), e.Topic)
		require.EqualValues(t, 1, e.QoS)
		require.False(t, e.Retained)
		ev, err := protocol.Decode(e.Payload)
		require.NoError(t, err)
		require.Equal(t, ids[i], ev.ID)
		require.Equal(t, e.Seq, ev.Seq)
		if i > 0 {
			require.Greater(t, e.Seq, es[i-1].Seq)
		}
	}
	clear := es[25]
	require.True(t, clear.Retained)
	require.Empty(t, clear.Payload)
	require.Equal(t, "fleet/v1/robots/r-1/sessions/s-9/state", clear.Topic)

	// Read after a cursor and ack a few.
	tail, err := o.Read(es[9].Seq, 5)
	require.NoError(t, err)
	require.Len(t, tail, 5)
	require.Equal(t, es[10].Seq, tail[0].Seq)
	require.NoError(t, o.Ack(es[0].Seq, es[1].Seq, 999999))
	st := o.Stats()
	require.EqualValues(t, 24, st.Depth)
	require.EqualValues(t, 2, st.Acked)
	left, err := o.Read(0, 1)
	require.NoError(t, err)
	require.Equal(t, es[2].Seq, left[0].Seq)
}

func TestEmitRejectsMetrics(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	err := o.Emit(protocol.NewEvent("r-1", protocol.RobotMetrics{}))
	require.ErrorIs(t, err, spool.ErrNotSpooled)
}

func TestSeqIncreasesAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	var last int64
	for round := range 3 {
		o, err := spool.Open(spool.Options{Path: path, SeqBlock: 10})
		require.NoError(t, err)
		for i := range 7 + round*11 { // cross block boundaries
			s, err := o.NextSeq()
			require.NoError(t, err)
			require.Greater(t, s, last)
			last = s
			if i%3 == 0 {
				ev := note(i)
				require.NoError(t, o.Emit(ev))
				require.Greater(t, ev.Seq, last)
				last = ev.Seq
			}
		}
		require.NoError(t, o.Close())
	}
	// Held records survive a reopen with their counters.
	o := open(t, path, 0)
	require.EqualValues(t, 3+6+10, o.Stats().Depth)
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	open(t, path, 0)
	_, err := spool.Open(spool.Options{Path: path, LockTimeout: 50e6})
	require.ErrorIs(t, err, spool.ErrLocked)
}

func TestCapDropOrder(t *testing.T) {
	tests := []struct {
		name      string
		fill      func(o *spool.Outbox) // what is in the spool before it overflows
		wantKinds []string              // types expected to survive, oldest first, after the overflow
		wantDrop  [3]int64              // other, notification, progress
	}{
		{
			name: "progress first",
			fill: func(o *spool.Outbox) {
				mustEmit(t, o, alert(0), progress(1), note(2), progress(3), alert(4))
			},
			wantDrop: [3]int64{0, 0, 2},
		},
		{
			name: "then notifications",
			fill: func(o *spool.Outbox) {
				mustEmit(t, o, alert(0), note(1), alert(2), note(3), alert(4))
			},
			wantDrop: [3]int64{0, 2, 0},
		},
		{
			name: "then the rest oldest first",
			fill: func(o *spool.Outbox) {
				mustEmit(t, o, alert(0), alert(1), alert(2), alert(3), alert(4))
			},
			wantDrop: [3]int64{2, 0, 0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Size the cap to hold exactly five records of the largest kind.
			probe := open(t, filepath.Join(t.TempDir(), "probe.db"), 0)
			mustEmit(t, probe, alert(0))
			st := probe.Stats()
			capBytes := st.Bytes*5 + 20
			o := open(t, filepath.Join(t.TempDir(), "spool.db"), capBytes)
			tc.fill(o)
			before, err := o.Read(0, 100)
			require.NoError(t, err)
			require.Len(t, before, 5)
			mustEmit(t, o, alert(100), alert(101))
			st = o.Stats()
			require.Equal(t, tc.wantDrop, st.Dropped, "dropped per class")
			require.LessOrEqual(t, st.Bytes, capBytes)
			after, err := o.Read(0, 100)
			require.NoError(t, err)
			require.EqualValues(t, len(after), st.Depth)
			// Survivors keep their order and the two new alerts are last.
			for i := 1; i < len(after); i++ {
				require.Greater(t, after[i].Seq, after[i-1].Seq)
			}
			last := decode(t, after[len(after)-1].Payload)
			require.Equal(t, "a101", last.Data.(protocol.RobotAlert).Alert)
			// What was dropped is exactly the expected classes, oldest first.
			kept := map[int64]bool{}
			for _, e := range after {
				kept[e.Seq] = true
			}
			var droppedTypes []string
			for _, e := range before {
				if !kept[e.Seq] {
					droppedTypes = append(droppedTypes, decode(t, e.Payload).Type)
				}
			}
			require.Len(t, droppedTypes, 2)
		})
	}
}

func TestConcurrentEmitKeepsSeqOrder(t *testing.T) {
	o := open(t, filepath.Join(t.TempDir(), "spool.db"), 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				require.NoError(t, o.Emit(note(g*100+i)))
			}
		})
	}
	wg.Wait()
	es, err := o.Read(0, 1000)
	require.NoError(t, err)
	require.Len(t, es, 200)
	for i, e := range es {
		ev := decode(t, e.Payload)
		require.Equal(t, e.Seq, ev.Seq)
		if i > 0 {
			require.Greater(t, e.Seq, es[i-1].Seq)
		}
	}
}

func mustEmit(t *testing.T, o *spool.Outbox, evs ...*protocol.Event) {
	t.Helper()
	for _, ev := range evs {
		require.NoError(t, o.Emit(ev))
	}
}

func decode(t *testing.T, b []byte) *protocol.Event {
	t.Helper()
	ev, err := protocol.Decode(b)
	require.NoError(t, err, "payload %s", json.RawMessage(b))
	return ev
}

func TestDropCountersPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	probe := open(t, filepath.Join(t.TempDir(), "probe.db"), 0)
	mustEmit(t, probe, alert(0))
	capBytes := probe.Stats().Bytes * 3
	o, err := spool.Open(spool.Options{Path: path, MaxBytes: capBytes})
	require.NoError(t, err)
	mustEmit(t, o, alert(0), alert(1), alert(2), alert(3), alert(4))
	require.EqualValues(t, 2, o.Stats().TotalDropped())
	require.NoError(t, o.MarkDropsReported(1))
	require.NoError(t, o.Close())
	o = open(t, path, capBytes)
	st := o.Stats()
	require.EqualValues(t, 2, st.Dropped[spool.ClassOther])
	require.EqualValues(t, 1, st.DropsReported)
	require.EqualValues(t, 3, st.Depth)
}

// An emptied spool whose file grew during an outage is rewritten small,
// keeping seq and drop counters.
func TestCompactWhenEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	o, err := spool.Open(spool.Options{Path: path, CompactAbove: 256 << 10, SeqBlock: 10})
	require.NoError(t, err)
	defer o.Close()
	big := strings.Repeat("x", 4000)
	var seqs []int64
	var last int64
	for i := range 300 {
		ev := protocol.NewEvent("r-1", protocol.RobotNotification{Level: "info", Title: fmt.Sprint(i), Message: big})
		require.NoError(t, o.Emit(ev))
		seqs = append(seqs, ev.Seq)
		last = ev.Seq
	}
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Greater(t, fi.Size(), int64(1<<20))
	require.NoError(t, o.Ack(seqs[:299]...))
	require.Zero(t, o.Stats().Compactions, "not empty yet")
	require.NoError(t, o.Ack(seqs[299]))
	require.EqualValues(t, 1, o.Stats().Compactions)
	fi, err = os.Stat(path)
	require.NoError(t, err)
	require.Less(t, fi.Size(), int64(256<<10))
	// Still usable, seq still increasing, also after a reopen.
	ev := note(1)
	require.NoError(t, o.Emit(ev))
	require.Greater(t, ev.Seq, last)
	es, err := o.Read(0, 10)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.NoError(t, o.Close())
	o2 := open(t, path, 0)
	s, err := o2.NextSeq()
	require.NoError(t, err)
	require.Greater(t, s, ev.Seq)
	require.EqualValues(t, 1, o2.Stats().Depth)
}

// The connection epoch counts up by one per call, across restarts and
// across the compaction of an empty spool.
func TestEpochPersistsAcrossRestartsAndCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	o, err := spool.Open(spool.Options{Path: path})
	require.NoError(t, err)
	for want := int64(1); want <= 3; want++ {
		e, err := o.NextEpoch()
		require.NoError(t, err)
		require.Equal(t, want, e)
	}
	require.NoError(t, o.Compact())
	e, err := o.NextEpoch()
	require.NoError(t, err)
	require.EqualValues(t, 4, e)
	require.NoError(t, o.Close())
	o, err = spool.Open(spool.Options{Path: path})
	require.NoError(t, err)
	defer o.Close()
	e, err = o.NextEpoch()
	require.NoError(t, err)
	require.EqualValues(t, 5, e)
}
