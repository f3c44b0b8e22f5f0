package brokertest

import (
	"net"
	"time"
)

// Kill stops the broker with SIGKILL, as a crash would: with persistence on,
// only what its last autosave wrote survives. Start brings it back.
func (m *Mosquitto) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
	for i := 0; i < 100 && portOpen(m.Addr()); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}

func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
