package session

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxParamString bounds a string param's length: params travel in every
// session event and in the journal.
const maxParamString = 4096

// checkParams checks a command's params against the pipeline's declared
// ones and returns them converted, with defaults filled in. Errors wrap
// ErrInvalidParams and name the param and the rule.
func checkParams(p *Pipeline, in map[string]any) (map[string]any, error) {
	out := make(map[string]any, len(p.Params))
	declared := make(map[string]*Param, len(p.Params))
	for i := range p.Params {
		declared[p.Params[i].Name] = &p.Params[i]
	}
	var unknown []string
	for name := range in {
		if declared[name] == nil {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		names := make([]string, len(p.Params))
		for i := range p.Params {
			names[i] = p.Params[i].Name
		}
		return nil, fmt.Errorf("%w: param %q is not declared by pipeline %q (declared: %v)", ErrInvalidParams, unknown[0], p.Name, names)
	}
	inArgv := argvParams(p)
	for i := range p.Params {
		d := &p.Params[i]
		v, ok := in[d.Name]
		if ok && v != nil && d.Type == ParamString && inArgv[d.Name] && !d.AllowLeadingDash {
			// A value that starts with "-" would be read as an option by the
			// program it is passed to ("--output=/etc/x").
			if s, isStr := v.(string); isStr && strings.HasPrefix(s, "-") {
				return nil, fmt.Errorf("%w: param %q: must not start with \"-\" (it is passed in the command line; the pipeline may set allow_leading_dash), got %q",
					ErrInvalidParams, d.Name, clip(s, 64))
			}
		}
		if !ok || v == nil {
			if d.Required {
				return nil, fmt.Errorf("%w: param %q is required", ErrInvalidParams, d.Name)
			}
			if d.Default == nil {
				continue
			}
			v = d.Default
		}
		if s, ok := v.(string); ok && len(s) > maxParamString {
			return nil, fmt.Errorf("%w: param %q: must be at most %d bytes, got %d", ErrInvalidParams, d.Name, maxParamString, len(s))
		}
		c, err := d.Check(v)
		if err != nil {
			return nil, fmt.Errorf("%w: param %q: %v", ErrInvalidParams, d.Name, err)
		}
		out[d.Name] = c
	}
	return out, nil
}

// argvParams returns the params a pipeline's argv template uses.
func argvParams(p *Pipeline) map[string]bool {
	out := map[string]bool{}
	for _, a := range p.Command {
		for _, m := range placeholder.FindAllStringSubmatch(a, -1) {
			if name, ok := strings.CutPrefix(m[1], "param."); ok {
				out[name] = true
			}
		}
	}
	return out
}

// formatParam renders a checked param value as one argv element.
func formatParam(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
