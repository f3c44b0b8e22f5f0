package mqttkit

import "errors"

var (
	// ErrNoBroker: the broker list is empty.
	ErrNoBroker = errors.New("no broker URL")
	// ErrBadBroker: a broker URL is malformed or has an unsupported scheme.
	ErrBadBroker = errors.New("bad broker URL")
	// ErrTLS: a TLS file cannot be read or parsed.
	ErrTLS = errors.New("bad TLS setting")
	// ErrTimeout: an MQTT operation did not complete in time.
	ErrTimeout = errors.New("timed out")
)
