package brokertest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// Connect is an MQTT 3.1.1 CONNECT for RawConnect: a client that can
// drop its TCP connection without a DISCONNECT, so the broker publishes its
// Will, as an attacker (or a robot losing power) does.
type Connect struct {
	ClientID, Username, Password string
	// Will is sent when WillTopic is set.
	WillTopic   string
	WillPayload []byte
	WillQoS     byte
	WillRetain  bool
	// KeepClean false asks for a persistent session (clean session off).
	KeepClean bool
	// LocalAddr is the local IP to dial from (e.g. 127.0.0.2 to be another
	// client address on loopback). Default any.
	LocalAddr string
}

// Connack return codes of MQTT 3.1.1.
const (
	ConnAccepted          byte = 0
	ConnServerUnavailable byte = 3
	ConnBadCredentials    byte = 4
	ConnNotAuthorized     byte = 5
)

// RawConnect dials addr (host:port), sends c and returns the open
// connection with the CONNACK return code. The caller closes the
// connection; closing it without a DISCONNECT fires the Will. A broker that
// closes the connection instead of answering gives an error.
func RawConnect(addr string, c Connect) (net.Conn, byte, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if c.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.LocalAddr)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	str := func(b []byte, s []byte) []byte {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		return append(b, s...)
	}
	var flags byte
	if !c.KeepClean {
		flags |= 0x02
	}
	body := str(nil, []byte("MQTT"))
	body = append(body, 4, 0, 0, 60) // level 4, flags (set below), keepalive 60 s
	payload := str(nil, []byte(c.ClientID))
	if c.WillTopic != "" {
		flags |= 0x04 | c.WillQoS<<3
		if c.WillRetain {
			flags |= 0x20
		}
		payload = str(payload, []byte(c.WillTopic))
		payload = str(payload, c.WillPayload)
	}
	if c.Username != "" {
		flags |= 0x80
		payload = str(payload, []byte(c.Username))
	}
	if c.Password != "" {
		flags |= 0x40
		payload = str(payload, []byte(c.Password))
	}
	body[7] = flags
	body = append(body, payload...)
	pkt := append([]byte{0x10}, remainingLength(len(body))...)
	pkt = append(pkt, body...)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		conn.Close()
		return nil, 0, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("no CONNACK: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	if ack[0] != 0x20 || ack[1] != 2 {
		conn.Close()
		return nil, 0, fmt.Errorf("not a CONNACK: % x", ack)
	}
	return conn, ack[3], nil
}

func remainingLength(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}
