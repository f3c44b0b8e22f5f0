package socketio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// Engine.IO v4 packet types (the first character of every packet).
const (
	eioOpen    = '0'
	eioClose   = '1'
	eioPing    = '2'
	eioPong    = '3'
	eioMessage = '4'
	eioUpgrade = '5'
	eioNoop    = '6'
)

// recordSep joins Engine.IO packets in one long-polling payload. JSON text
// never contains it unescaped, so splitting on it is safe.
const recordSep = '\x1e'

// EIOPacket is one decoded Engine.IO packet.
type EIOPacket struct {
	Type byte   // '0'..'6'
	Data []byte // what follows the type character; aliases the input
}

// DecodeEIO decodes one Engine.IO v4 text packet.
func DecodeEIO(b []byte) (EIOPacket, error) {
	if len(b) == 0 {
		return EIOPacket{}, ErrEmptyPacket
	}
	switch t := b[0]; {
	case t == 'b':
		return EIOPacket{}, ErrBinary
	case t >= eioOpen && t <= eioNoop:
		return EIOPacket{Type: t, Data: b[1:]}, nil
	}
	return EIOPacket{}, fmt.Errorf("%w %q", ErrPacketType, b[:1])
}

// SplitPayload splits a long-polling payload into its packets.
func SplitPayload(b []byte) [][]byte { return bytes.Split(b, []byte{recordSep}) }

// Socket.IO v5 packet types.
const (
	SIOConnect      = 0
	SIODisconnect   = 1
	SIOEvent        = 2
	SIOAck          = 3
	SIOConnectError = 4
	SIOBinaryEvent  = 5
	SIOBinaryAck    = 6
)

// maxAckID keeps ack ids within JavaScript's safe integers.
const maxAckID = 1<<53 - 1

// SIOPacket is one decoded Socket.IO v5 packet (the payload of an
// Engine.IO message packet).
type SIOPacket struct {
	Type      int
	Namespace string          // "/" when absent
	ID        int64           // ack id; -1 when absent
	Data      json.RawMessage // JSON payload; nil when absent. Aliases the input.
}

// DecodeSIO decodes one Socket.IO v5 packet:
// <type>[<attachments>-][<namespace>,][<ack id>][<JSON>].
func DecodeSIO(b []byte) (SIOPacket, error) {
	p := SIOPacket{Namespace: "/", ID: -1}
	if len(b) == 0 {
		return p, ErrEmptyPacket
	}
	if b[0] < '0' || b[0] > '6' {
		return p, fmt.Errorf("%w %q", ErrPacketType, b[:1])
	}
	p.Type = int(b[0] - '0')
	if p.Type == SIOBinaryEvent || p.Type == SIOBinaryAck {
		return p, ErrBinary
	}
	b = b[1:]
	if len(b) > 0 && b[0] == '/' {
		i := bytes.IndexByte(b, ',')
		if i < 0 {
			p.Namespace, b = string(b), nil
		} else {
			p.Namespace, b = string(b[:i]), b[i+1:]
		}
	}
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	if n > 0 {
		id, err := strconv.ParseInt(string(b[:n]), 10, 64)
		if err != nil || id > maxAckID {
			return p, fmt.Errorf("%w: %.20q", ErrAckID, b[:n])
		}
		p.ID, b = id, b[n:]
	}
	if len(b) > 0 {
		if !json.Valid(b) {
			return p, fmt.Errorf("%w: not valid JSON", ErrPayload)
		}
		p.Data = b
	}
	switch p.Type {
	case SIOEvent, SIOAck:
		if len(p.Data) == 0 || p.Data[0] != '[' {
			return p, fmt.Errorf("%w: an event or ack carries a JSON array", ErrPayload)
		}
	case SIOConnect:
		if len(p.Data) > 0 && p.Data[0] != '{' {
			return p, fmt.Errorf("%w: the connect payload is a JSON object", ErrPayload)
		}
	case SIODisconnect:
		if len(p.Data) > 0 {
			return p, fmt.Errorf("%w: disconnect carries no payload", ErrPayload)
		}
	}
	return p, nil
}

// EventArgs splits an EVENT packet's array into the event name and its
// first argument (nil when absent; further arguments are ignored, as the
// Python server's single-argument handlers do).
func EventArgs(data json.RawMessage) (name string, arg json.RawMessage, err error) {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	if len(args) == 0 || json.Unmarshal(args[0], &name) != nil || name == "" {
		return "", nil, fmt.Errorf("%w: an event starts with its name", ErrPayload)
	}
	if len(args) > 1 {
		arg = args[1]
	}
	return name, arg, nil
}

// AppendEvent appends the Engine.IO message carrying Socket.IO EVENT
// ["name",payload] on namespace "/": 42["name",payload]. name must need no
// JSON escaping (every name the server emits is a plain identifier).
func AppendEvent(b []byte, name string, payload []byte) []byte {
	b = append(b, `42["`...)
	b = append(b, name...)
	b = append(b, `",`...)
	b = append(b, payload...)
	return append(b, ']')
}

// AppendAck appends the Engine.IO message carrying Socket.IO ACK id
// [payload]: 43<id>[payload].
func AppendAck(b []byte, id int64, payload []byte) []byte {
	b = append(b, "43"...)
	b = strconv.AppendInt(b, id, 10)
	b = append(b, '[')
	b = append(b, payload...)
	return append(b, ']')
}

// appendSIO appends an Engine.IO message carrying a Socket.IO packet of typ
// on namespace ns with a JSON payload (nil for none).
func appendSIO(b []byte, typ int, ns string, payload []byte) []byte {
	b = append(b, eioMessage, byte('0'+typ))
	if ns != "/" && ns != "" {
		b = append(b, ns...)
		b = append(b, ',')
	}
	return append(b, payload...)
}
