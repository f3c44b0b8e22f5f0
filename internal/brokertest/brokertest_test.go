package brokertest

import (
	"net"
	"testing"
)

func TestBrokersStartAndRestart(t *testing.T) {
	mo := StartMochi(t)
	if c, err := net.Dial("tcp", mo.Addr); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	ms := StartMosquitto(t, Options{WebSockets: true})
	ms.Stop()
	if c, err := net.Dial("tcp", ms.Addr()); err == nil {
		c.Close()
		t.Fatal("mosquitto still listening after Stop")
	}
	ms.Start()
	WaitPort(t, ms.Addr(), 0)
}
