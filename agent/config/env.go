package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/robotfleet/fleetlink/internal/mqttkit"
	"go.yaml.in/yaml/v3"
)

var ioEOF = io.EOF

// Aliases are the spec §8 names that differ from the generated ones.
var aliases = map[string]string{
	"ROBOT_AGENT_MODEL_DIRS":       "sessions.model_dirs",
	"ROBOT_AGENT_METRICS_INTERVAL": "metrics.interval",
}

// EnvVar is one environment override.
type EnvVar struct {
	Name string // ROBOT_AGENT_MQTT_BROKER
	Path string // mqtt.broker
}

// EnvVars lists every override: one per option, named ROBOT_AGENT_ + the
// YAML path in upper case with '.' as '_', plus the spec's aliases. String
// lists are colon-separated; lists of objects (alerts.rules,
// sessions.pipelines) take YAML flow syntax, e.g.
// ROBOT_AGENT_ALERTS_RULES='[{name: hot, metric: cpu_temperature, threshold: 80}]'.
func EnvVars() []EnvVar {
	var out []EnvVar
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(path string, _ reflect.Value) error {
		out = append(out, EnvVar{Name: envName(path), Path: path})
		return nil
	})
	for name, path := range aliases {
		out = append(out, EnvVar{Name: name, Path: path})
	}
	return out
}

func envName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
	brokersType  = reflect.TypeOf(Brokers(nil))
)

// walk calls fn for every settable leaf: scalars and lists.
func walk(v reflect.Value, prefix string, fn func(path string, f reflect.Value) error) error {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.Struct:
			if err := walk(f, path, fn); err != nil {
				return err
			}
		default:
			if err := fn(path, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyEnv sets the options that have an environment variable.
func ApplyEnv(c *Config, getenv func(string) string) error {
	byPath := map[string][]string{}
	for name, path := range aliases {
		byPath[path] = append(byPath[path], name)
	}
	return walk(reflect.ValueOf(c).Elem(), "", func(path string, f reflect.Value) error {
		for _, name := range append([]string{envName(path)}, byPath[path]...) {
			s := getenv(name)
			if s == "" {
				continue
			}
			if err := setFromString(f, s); err != nil {
				return fmt.Errorf("%w: %s (from %s): %v", ErrInvalid, path, name, err)
			}
		}
		return nil
	})
}

func setFromString(f reflect.Value, s string) error {
	switch {
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a Go duration (e.g. 5s, 1m)", s)
		}
		f.SetInt(int64(d))
	case f.Type() == byteSizeType:
		b, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(b))
	case f.Type() == brokersType:
		f.Set(reflect.ValueOf(Brokers(mqttkit.SplitBrokers(s))))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not a boolean", s)
		}
		f.SetBool(b)
	case f.Kind() >= reflect.Int && f.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		f.SetInt(n)
	case f.Kind() == reflect.Float64:
		n, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		f.SetFloat(n)
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		var parts []string
		for p := range strings.SplitSeq(s, ":") {
			if p != "" {
				parts = append(parts, p)
			}
		}
		f.Set(reflect.ValueOf(parts))
	case f.Kind() == reflect.Slice:
		// Lists of objects: YAML flow syntax, checked like the file.
		v := reflect.New(f.Type())
		dec := yaml.NewDecoder(strings.NewReader(s))
		dec.KnownFields(true)
		if err := dec.Decode(v.Interface()); err != nil {
			return fmt.Errorf("want a YAML list, e.g. '[{name: x, ...}]': %v", err)
		}
		f.Set(v.Elem())
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
