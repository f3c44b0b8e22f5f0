package ingest

import "errors"

// Sentinel errors.
var (
	// ErrNotConnected: Publish was called while the MQTT connection is down.
	ErrNotConnected = errors.New("mqtt not connected")
	// ErrPublishTimeout: the broker did not acknowledge a publish in time.
	ErrPublishTimeout = errors.New("mqtt publish timeout")
	// ErrConfig: the options are unusable (bad broker URL).
	ErrConfig = errors.New("ingest config")
)
