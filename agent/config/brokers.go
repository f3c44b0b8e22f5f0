package config

import (
	"fmt"
	"strings"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"go.yaml.in/yaml/v3"
)

// Brokers is mqtt.broker: one broker URL or several to fail over between.
// In YAML a string (one URL, or several comma-separated) or a list; in the
// environment comma-separated (spec §8).
type Brokers []string

// UnmarshalYAML accepts a string or a list of strings.
func (b *Brokers) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*b = mqttkit.SplitBrokers(n.Value)
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*b = nil
		for _, s := range l {
			*b = append(*b, mqttkit.SplitBrokers(s)...)
		}
		return nil
	}
	return fmt.Errorf("line %d: mqtt.broker must be a URL or a list of URLs", n.Line)
}

// MarshalYAML writes one broker as a string, several as a list.
func (b Brokers) MarshalYAML() (any, error) {
	if len(b) == 1 {
		return b[0], nil
	}
	return []string(b), nil
}

// String is the list comma-separated, as the environment takes it.
func (b Brokers) String() string { return strings.Join(b, ",") }
