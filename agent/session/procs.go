package session

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
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
