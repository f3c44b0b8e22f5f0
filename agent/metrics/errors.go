package metrics

import "errors"

// Sentinel errors of the metrics package.
var (
	// ErrNoGPU: the collector's hardware or tool is not present.
	ErrNoGPU = errors.New("no GPU found")
	// ErrParse: a tool's output could not be parsed.
	ErrParse = errors.New("cannot parse collector output")
)
