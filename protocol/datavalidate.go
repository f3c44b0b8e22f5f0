package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// validateData checks one data value against the rules of its type, exactly
// as Decode judges the `data` of a received envelope: it encodes d and
// validates the JSON, so errors name paths under "data.".
func validateData(d Data) error {
	typ := d.EventType()
	info, ok := catalogByType[typ]
	if !ok {
		return fmt.Errorf("type: %w %q", ErrUnknownType, typ)
	}
	b, err := json.Marshal(normalize(d))
	if err != nil {
		return fmt.Errorf("validate %s: %w", typ, err)
	}
	tree, err := parseValue(b)
	if err != nil {
		return fmt.Errorf("validate %s: %w", typ, err)
	}
	var v validator
	v.check("data", info.dataNode, tree)
	if err := v.err(typ); err != nil {
		return err
	}
	val := reflect.New(info.goType).Elem()
	path := rootPath("data")
	if err := fill(&path, info.dataNode, tree, val); err != nil {
		return withType(err, typ)
	}
	if c, ok := val.Interface().(crossChecker); ok {
		c.crossCheck(&v)
	}
	return v.err(typ)
}

// Validate checks the data against the rules of robot.status.
func (d RobotStatus) Validate() error { return validateData(d) }

// Validate checks the data against the rules of robot.metrics.
func (d RobotMetrics) Validate() error { return validateData(d) }

// Validate checks the data against the rules of robot.alert.
func (d RobotAlert) Validate() error { return validateData(d) }

// Validate checks the data against the rules of robot.notification.
func (d RobotNotification) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.queued.
func (d SessionQueued) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.started.
func (d SessionStarted) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.progress.
func (d SessionProgress) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.completed.
func (d SessionCompleted) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.failed.
func (d SessionFailed) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.cancelled.
func (d SessionCancelled) Validate() error { return validateData(d) }

// Validate checks the data against the rules of session.state.
func (d SessionState) Validate() error { return validateData(d) }

// Validate checks the data against the rules of command.
func (d Command) Validate() error { return validateData(d) }

// Validate checks the data against the rules of command.reply.
func (d CommandReply) Validate() error { return validateData(d) }

// Validate checks the data against the rules of system.status.
func (d SystemStatus) Validate() error { return validateData(d) }

// ValidateEvent checks one payload against the contract: the counterpart of
// the Python server's validate_event(). It is Decode without the result.
func ValidateEvent(payload []byte) error {
	_, err := Decode(payload)
	return err
}
