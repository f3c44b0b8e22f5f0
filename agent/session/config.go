package session

import (
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// Runner kinds a pipeline may use.
const (
	RunnerExec         = "exec"          // an external program, argv only, never a shell
	RunnerONNXQuantize = "onnx-quantize" // the built-in ONNX weight quantizer
)

// Param types a pipeline may declare.
const (
	ParamInt    = "int"
	ParamFloat  = "float"
	ParamBool   = "bool"
	ParamString = "string"
	ParamEnum   = "enum"
)

// Config is the `sessions` section of agent.yaml. Every field's comment
// gives its default; DefaultConfig fills them in.
type Config struct {
	// MaxConcurrent sessions running at once. Default 1.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxQueued sessions waiting; more are refused with code busy. Default 16.
	MaxQueued int `yaml:"max_queued"`
	// ModelDirs are the directories models are looked up in; a command's
	// model must resolve inside one of them. Default [<state_dir>/models].
	ModelDirs []string `yaml:"model_dirs"`
	// Retain is how many finished sessions the journal keeps (with their
	// retained session.state). Default 50.
	Retain int `yaml:"retain"`
	// CancelGrace is how long a cancelled runner gets between SIGTERM and
	// SIGKILL. Default 10s.
	CancelGrace time.Duration `yaml:"cancel_grace"`
	// Pipelines the agent can run. Default: quantize-int8 and quantize-fp16
	// (built-in onnx-quantize runner).
	Pipelines []Pipeline `yaml:"pipelines"`
	// MaxLogBytes caps each session's session.log; the rest is cut with a
	// note. Default 10 MiB.
	MaxLogBytes int64 `yaml:"max_log_bytes"`
	// MaxOutputBytes caps each session's output directory; a run that
	// writes more is stopped and fails with runner_error. Default 4 GiB.
	MaxOutputBytes int64 `yaml:"max_output_bytes"`
}

// Pipeline is one runnable optimization, declared in the agent's config and
// nowhere else.
type Pipeline struct {
	// Name commands use to choose the pipeline (identifier rule of spec §1).
	Name string `yaml:"name"`
	// Description for people.
	Description string `yaml:"description"`
	// Runner is "exec" or "onnx-quantize".
	Runner string `yaml:"runner"`
	// Command is the exec runner's argv template. Placeholders {model},
	// {output_dir}, {session_id} and {param.NAME} are each substituted as a
	// whole argument.
	Command []string `yaml:"command"`
	// Env adds environment variables for the exec runner.
	Env map[string]string `yaml:"env"`
	// Params the pipeline accepts; commands are checked against them.
	Params []Param `yaml:"params"`
	// Timeout of one run; zero means 1h.
	Timeout time.Duration `yaml:"timeout"`
	// KeepOutputs is how many finished sessions keep their output
	// directory; zero means all that the journal retains.
	KeepOutputs int `yaml:"keep_outputs"`
	// MaxMemoryBytes caps the memory of the onnx-quantize runner's child
	// process; a model that needs more fails its session, not the agent.
	// Zero means half of the machine's RAM.
	MaxMemoryBytes int64 `yaml:"max_memory_bytes"`
}

// Param declares one pipeline parameter.
type Param struct {
	Name        string   `yaml:"name"`
	Type        string   `yaml:"type"` // int, float, bool, string, enum
	Description string   `yaml:"description"`
	Required    bool     `yaml:"required"`
	Default     any      `yaml:"default"`
	Min         *float64 `yaml:"min"`     // int and float
	Max         *float64 `yaml:"max"`     // int and float
	Choices     []string `yaml:"choices"` // enum
	// Pattern a string value must match in whole (Go regexp syntax,
	// anchored: "[a-z0-9_]+" means ^(?:[a-z0-9_]+)$). Empty: any string.
	Pattern string `yaml:"pattern"`
	// AllowLeadingDash lets a string value that lands in the exec argv
	// start with "-". Off by default: "--output=/etc/x" would be read by the
	// program as an option, not a value.
	AllowLeadingDash bool `yaml:"allow_leading_dash"`
}

// DefaultPipelines are the built-in pipelines the agent runs with no config.
func DefaultPipelines() []Pipeline {
	one := 1.0
	q := func(name, mode, desc string) Pipeline {
		return Pipeline{
			Name: name, Runner: RunnerONNXQuantize, Description: desc, Timeout: time.Hour,
			Params: []Param{
				{Name: "mode", Type: ParamEnum, Choices: []string{"int8", "fp16"}, Default: mode, Description: "weight format"},
				{Name: "per_channel", Type: ParamBool, Default: true, Description: "int8: one scale per output channel"},
				{Name: "min_elements", Type: ParamInt, Default: 1024, Min: &one, Description: "smallest weight tensor to quantize"},
				{Name: "rounding", Type: ParamEnum, Choices: []string{"sum", "nearest"}, Default: "sum",
					Description: "int8: sum keeps each output channel's weight sum (data-free bias correction); nearest is plain rounding"},
				{Name: "asymmetric", Type: ParamBool, Default: false,
					Description: "int8: a zero point on every weight (opset >= 13 per channel); by default one is kept only where it raises the weight's SNR by >= 1 dB"},
				{Name: "symmetric", Type: ParamBool, Default: false,
					Description: "int8: no zero points at all (plain symmetric int8, a little smaller)"},
				{Name: "keep_names", Type: ParamBool, Default: false,
					Description: "keep the model's value names (by default all but its inputs and outputs get short ones: smaller file)"},
			},
		}
	}
	return []Pipeline{
		q("quantize-int8", "int8", "ONNX weight-only int8 quantization (built in)"),
		q("quantize-fp16", "fp16", "ONNX weight conversion to float16 (built in)"),
	}
}

// DefaultConfig returns the defaults, with model directories under stateDir.
func DefaultConfig(stateDir string) Config {
	return Config{
		MaxConcurrent:  1,
		MaxQueued:      16,
		ModelDirs:      []string{stateDir + "/models"},
		Retain:         50,
		CancelGrace:    10 * time.Second,
		Pipelines:      DefaultPipelines(),
		MaxLogBytes:    10 << 20,
		MaxOutputBytes: 4 << 30,
	}
}

// FillDefaults sets zero fields to their defaults.
func (c *Config) FillDefaults(stateDir string) {
	d := DefaultConfig(stateDir)
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = d.MaxConcurrent
	}
	if c.MaxQueued == 0 {
		c.MaxQueued = d.MaxQueued
	}
	if len(c.ModelDirs) == 0 {
		c.ModelDirs = d.ModelDirs
	}
	if c.Retain == 0 {
		c.Retain = d.Retain
	}
	if c.CancelGrace == 0 {
		c.CancelGrace = d.CancelGrace
	}
	if c.Pipelines == nil {
		c.Pipelines = d.Pipelines
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = d.MaxLogBytes
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = d.MaxOutputBytes
	}
	for i := range c.Pipelines {
		if c.Pipelines[i].Timeout == 0 {
			c.Pipelines[i].Timeout = time.Hour
		}
	}
}

// Validate returns an error naming the first field (as its YAML path under
// `sessions`) that breaks a rule.
func (c *Config) Validate() error {
	switch {
	case c.MaxConcurrent < 1:
		return fmt.Errorf("sessions.max_concurrent: must be at least 1, got %d", c.MaxConcurrent)
	case c.MaxQueued < 0:
		return fmt.Errorf("sessions.max_queued: must not be negative, got %d", c.MaxQueued)
	case c.Retain < 1:
		return fmt.Errorf("sessions.retain: must be at least 1, got %d", c.Retain)
	case c.CancelGrace < 0:
		return fmt.Errorf("sessions.cancel_grace: must not be negative, got %s", c.CancelGrace)
	case c.MaxLogBytes < 0:
		return fmt.Errorf("sessions.max_log_bytes: must not be negative, got %d", c.MaxLogBytes)
	case c.MaxOutputBytes < 0:
		return fmt.Errorf("sessions.max_output_bytes: must not be negative, got %d", c.MaxOutputBytes)
	}
	for i, d := range c.ModelDirs {
		if d == "" {
			return fmt.Errorf("sessions.model_dirs[%d]: must not be empty", i)
		}
	}
	seen := map[string]bool{}
	for i := range c.Pipelines {
		p := &c.Pipelines[i]
		at := fmt.Sprintf("sessions.pipelines[%d]", i)
		if !protocol.ValidID(p.Name) {
			return fmt.Errorf("%s.name: %q must match %s", at, p.Name, "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
		}
		at = fmt.Sprintf("sessions.pipelines[%d] (%s)", i, p.Name)
		if seen[p.Name] {
			return fmt.Errorf("%s.name: duplicate pipeline name", at)
		}
		seen[p.Name] = true
		switch p.Runner {
		case RunnerExec:
			if len(p.Command) == 0 || p.Command[0] == "" {
				return fmt.Errorf("%s.command: an exec pipeline needs an argv, e.g. [\"/usr/bin/trtexec\", \"--onnx={model}\"]", at)
			}
		case RunnerONNXQuantize:
			if len(p.Command) > 0 {
				return fmt.Errorf("%s.command: the %s runner takes no command", at, p.Runner)
			}
		default:
			return fmt.Errorf("%s.runner: must be %q or %q, got %q", at, RunnerExec, RunnerONNXQuantize, p.Runner)
		}
		if p.Timeout < 0 {
			return fmt.Errorf("%s.timeout: must not be negative, got %s", at, p.Timeout)
		}
		if p.KeepOutputs < 0 {
			return fmt.Errorf("%s.keep_outputs: must not be negative, got %d", at, p.KeepOutputs)
		}
		if p.MaxMemoryBytes < 0 {
			return fmt.Errorf("%s.max_memory_bytes: must not be negative, got %d", at, p.MaxMemoryBytes)
		}
		names := map[string]bool{}
		for j := range p.Params {
			if err := p.Params[j].validate(fmt.Sprintf("%s.params[%d]", at, j)); err != nil {
				return err
			}
			if names[p.Params[j].Name] {
				return fmt.Errorf("%s.params[%d].name: duplicate param %q", at, j, p.Params[j].Name)
			}
			names[p.Params[j].Name] = true
		}
		if err := checkPlaceholders(p); err != nil {
			return fmt.Errorf("%s.%w", at, err)
		}
	}
	return nil
}

func (p *Param) validate(at string) error {
	if !protocol.ValidID(p.Name) {
		return fmt.Errorf("%s.name: %q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", at, p.Name)
	}
	at += " (" + p.Name + ")"
	switch p.Type {
	case ParamInt, ParamFloat:
		if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
			return fmt.Errorf("%s.min: %v is above max %v", at, *p.Min, *p.Max)
		}
	case ParamBool, ParamString:
	case ParamEnum:
		if len(p.Choices) == 0 {
			return fmt.Errorf("%s.choices: an enum needs at least one choice", at)
		}
	default:
		return fmt.Errorf("%s.type: must be int, float, bool, string or enum, got %q", at, p.Type)
	}
	if p.Type != ParamEnum && len(p.Choices) > 0 {
		return fmt.Errorf("%s.choices: only enum params take choices", at)
	}
	if p.Pattern != "" {
		if p.Type != ParamString {
			return fmt.Errorf("%s.pattern: only string params take a pattern", at)
		}
		if _, err := regexp.Compile(anchored(p.Pattern)); err != nil {
			return fmt.Errorf("%s.pattern: %q is not a Go regexp: %v", at, p.Pattern, err)
		}
	}
	if p.AllowLeadingDash && p.Type != ParamString {
		return fmt.Errorf("%s.allow_leading_dash: only string params take it", at)
	}
	if p.Default != nil {
		if _, err := p.Check(p.Default); err != nil {
			return fmt.Errorf("%s.default: %v", at, err)
		}
	}
	return nil
}

// Check converts v (from JSON or YAML) to the param's Go type and checks its
// range or choices. The error says the rule, without the param's name.
func (p *Param) Check(v any) (any, error) {
	switch p.Type {
	case ParamInt, ParamFloat:
		f, ok := toFloat(v)
		if !ok {
			return nil, fmt.Errorf("must be a number, got %T", v)
		}
		if p.Type == ParamInt && f != math.Trunc(f) {
			return nil, fmt.Errorf("must be an integer, got %v", f)
		}
		if p.Min != nil && f < *p.Min || p.Max != nil && f > *p.Max {
			return nil, fmt.Errorf("must be in [%s, %s], got %v", bound(p.Min, "-inf"), bound(p.Max, "+inf"), f)
		}
		if p.Type == ParamInt {
			return int64(f), nil
		}
		return f, nil
	case ParamBool:
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("must be true or false, got %T", v)
		}
		return b, nil
	case ParamString, ParamEnum:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("must be a string, got %T", v)
		}
		if p.Type == ParamEnum {
			for _, c := range p.Choices {
				if s == c {
					return s, nil
				}
			}
			return nil, fmt.Errorf("must be one of %v, got %q", p.Choices, s)
		}
		if p.Pattern != "" {
			re, err := regexp.Compile(anchored(p.Pattern))
			if err != nil {
				return nil, fmt.Errorf("bad pattern %q: %v", p.Pattern, err)
			}
			if !re.MatchString(s) {
				return nil, fmt.Errorf("must match the pattern %q, got %q", p.Pattern, clip(s, 64))
			}
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown type %q", p.Type)
}

// anchored makes a param pattern match the whole value.
func anchored(pattern string) string { return "^(?:" + pattern + ")$" }

func bound(f *float64, inf string) string {
	if f == nil {
		return inf
	}
	return fmt.Sprint(*f)
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n) && !math.IsInf(n, 0)
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	}
	return 0, false
}
