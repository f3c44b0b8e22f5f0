package session

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

// procStart returns the start time of process pid in clock ticks since boot
// (field 22 of /proc/PID/stat), which tells a process from a later one that
// reused its pid.
func procStart(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.start, nil
}

type procStat struct {
	pgrp  int
	start uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) may hold spaces and parens: fields after
	// the last ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat pgrp: %w", pid, err)
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return procStat{pgrp: pgrp, start: start}, nil
}

// groupMembers returns the live processes of process group pgid that
// started no earlier than start (ticks), i.e. those of our run rather than
// of a later group that reused the id.
func groupMembers(pgid int, start uint64) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.pgrp != pgid || st.start < start {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// killLeftovers kills what is left of a process group the journal recorded
// for a session that was running when the agent died. When the group's
// leader still exists with another start time, the id was reused by someone
// else's group and nothing is killed. It returns how many processes were
// signalled.
func killLeftovers(pgid int, start uint64) int {
	if pgid <= 1 {
		return 0
	}
	if st, err := procStart(pgid); err == nil && st != start {
		return 0
	}
	pids := groupMembers(pgid, start)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

// groupAlive reports whether any process of group pgid exists.
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Child processes are started from one goroutine locked to its OS thread
// for the life of the agent. Linux sends the Pdeathsig signal when the
// *thread* that forked the child exits, not the process; a Go thread can
// exit while the agent runs (when a goroutine locked to it ends), which
// would kill a healthy runner.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startProcess runs cmd.Start on the spawner thread. cmd's stdio must be
// *os.File (or nil) so that Start starts no copying goroutines.
func startProcess(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the agent
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}
