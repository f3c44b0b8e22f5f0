// Package protocol is the fleet wire contract (spec/PROTOCOL.md) in Go: the
// identifier rule, MQTT topics, the event envelope, a typed struct for the
// data of every event type, decoding with validation, and the event catalog
// with its JSON Schemas. The agent, the relay, fleetctl and every test use it
// as the single source of truth; it imports neither side.
//
// Validation rules live in struct tags (`v:"required,min=0,max=100"`). The
// same rules drive the Go validator and the generated JSON Schemas, so the
// two cannot drift apart.
package protocol

//go:generate go run ./internal/gendocs -schema schema -doc ../docs/PROTOCOL.md
