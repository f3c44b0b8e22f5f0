package spool_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/robotfleet/fleetlink/agent/spool"
	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary act as a spool writer process for
// TestEveryAcknowledgedEmitSurvivesKill9.
func TestMain(m *testing.M) {
	if path := os.Getenv("SPOOL_CRASH_WRITER"); path != "" {
		crashWriter(path)
		return
	}
	os.Exit(m.Run())
}

// crashWriter emits from 8 goroutines forever and prints the seq of every
// Emit that returned nil.
func crashWriter(path string) {
	o, err := spool.Open(spool.Options{Path: path, SeqBlock: 50})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				ev := note(g*1_000_000 + i)
				if err := o.Emit(ev); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(4)
				}
				mu.Lock()
				fmt.Fprintln(w, ev.Seq)
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

// Every Emit that returned nil before a SIGKILL is in the spool after it,
// and seq keeps increasing across the kill.
func TestEveryAcknowledgedEmitSurvivesKill9(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spool.db")
	for round := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SPOOL_CRASH_WRITER="+path)
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		var acked []int64
		sc := bufio.NewScanner(stdout)
		deadline := time.Now().Add(20 * time.Second)
		for len(acked) < 300 && sc.Scan() && time.Now().Before(deadline) {
			s, err := strconv.ParseInt(sc.Text(), 10, 64)
			require.NoError(t, err)
			acked = append(acked, s)
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		require.GreaterOrEqual(t, len(acked), 300, "round %d: writer too slow or failed", round)

		o, err := spool.Open(spool.Options{Path: path})
		require.NoError(t, err)
		es, err := o.Read(0, 1_000_000)
		require.NoError(t, err)
		held := map[int64]bool{}
		for i, e := range es {
			held[e.Seq] = true
			if i > 0 {
				require.Greater(t, e.Seq, es[i-1].Seq)
			}
			ev := decode(t, e.Payload)
			require.Equal(t, e.Seq, ev.Seq)
		}
		for _, s := range acked {
			require.True(t, held[s], "round %d: acknowledged seq %d lost by kill -9", round, s)
		}
		next, err := o.NextSeq()
		require.NoError(t, err)
		require.Greater(t, next, es[len(es)-1].Seq)
		require.NoError(t, o.Close())
	}
}
