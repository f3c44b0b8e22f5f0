package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FieldError is one broken rule, at a JSON path such as data.cpu.per_core[3].
type FieldError struct {
	Path string
	Msg  string
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// ValidationError lists every broken rule of one event. It wraps ErrInvalid.
type ValidationError struct {
	Type   string // the event type, when known
	Fields []FieldError
}

// maxReported bounds the list, so one hostile payload cannot make a huge error.
const maxReported = 20

func (e *ValidationError) Error() string {
	var b strings.Builder
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	return b.String()
}

func (e *ValidationError) Unwrap() error { return ErrInvalid }

type validator struct {
	errs []FieldError
	at   pathBuf // where check is, turned into a string only for an error
}

// pathBuf is a JSON path kept as segments while walking a tree, so valid
// payloads cost no path strings.
type pathBuf struct {
	segs []pathSeg
}

type pathSeg struct {
	name  string // object key
	idx   int    // array index, when isIdx
	isIdx bool
}

func (p *pathBuf) push(name string) { p.segs = append(p.segs, pathSeg{name: name}) }
func (p *pathBuf) pushIdx(i int)    { p.segs = append(p.segs, pathSeg{idx: i, isIdx: true}) }
func (p *pathBuf) pop()             { p.segs = p.segs[:len(p.segs)-1] }

// String renders the path as errors name it: data.disks[0].mount.
func (p *pathBuf) String() string {
	var b strings.Builder
	for i, s := range p.segs {
		switch {
		case s.isIdx:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.idx))
			b.WriteByte(']')
		case i > 0:
			b.WriteByte('.')
			b.WriteString(s.name)
		default:
			b.WriteString(s.name)
		}
	}
	return b.String()
}

// rootPath returns a pathBuf starting at root ("" for the envelope).
func rootPath(root string) pathBuf {
	var p pathBuf
	if root != "" {
		p.push(root)
	}
	return p
}

func (v *validator) addf(path, format string, args ...any) {
	if len(v.errs) < maxReported {
		v.errs = append(v.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
}

func (v *validator) err(typ string) error {
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Type: typ, Fields: v.errs}
}

// check validates a value decoded with json.Decoder.UseNumber against n;
// path names the value in errors.
func (v *validator) check(path string, n *node, val any) {
	v.at = rootPath(path)
	v.walk(n, val)
}

// here records a broken rule at the current path.
func (v *validator) here(format string, args ...any) {
	if len(v.errs) < maxReported {
		v.errs = append(v.errs, FieldError{Path: v.at.String(), Msg: fmt.Sprintf(format, args...)})
	}
}

// under records a broken rule at the current path's child name.
func (v *validator) under(name, format string, args ...any) {
	v.at.push(name)
	v.here(format, args...)
	v.at.pop()
}

func (v *validator) walk(n *node, val any) {
	if val == nil {
		if !n.nullable && n.kind != "any" {
			v.here("must be %s, got null", describe(n))
		}
		return
	}
	switch n.kind {
	case "any":
	case "object":
		obj, ok := val.(map[string]any)
		if !ok {
			v.here("must be an object, got %s", jsonKind(val))
			return
		}
		for _, p := range n.props {
			pv, present := obj[p.name]
			if !present {
				if p.required {
					v.under(p.name, "is required")
				}
				continue
			}
			v.at.push(p.name)
			v.walk(p.node, pv)
			v.at.pop()
		}
		for _, name := range n.forbidden {
			if _, present := obj[name]; present {
				v.under(name, "must be absent")
			}
		}
		for _, c := range n.conds {
			if !c.holds(obj) {
				continue
			}
			for _, name := range c.require {
				if obj[name] == nil {
					v.under(name, "is required when %s is %v", c.field, c.equals)
				}
			}
			for _, name := range c.forbid {
				if obj[name] != nil {
					v.under(name, "must be absent when %s is %v", c.field, c.equals)
				}
			}
		}
		if n.additional != nil {
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			slices.Sort(keys) // deterministic error order
			for _, k := range keys {
				v.at.push(k)
				v.walk(n.additional, obj[k])
				v.at.pop()
			}
		}
	case "array":
		arr, ok := val.([]any)
		if !ok {
			v.here("must be an array, got %s", jsonKind(val))
			return
		}
		for i, e := range arr {
			v.at.pushIdx(i)
			v.walk(n.items, e)
			v.at.pop()
		}
	case "string":
		s, ok := val.(string)
		if !ok {
			v.here("must be a string, got %s", jsonKind(val))
			return
		}
		if n.nonEmpty && s == "" {
			v.here("must not be empty")
		}
		if n.constant != nil && s != n.constant {
			v.here("must be %q, got %q", n.constant, clip(s))
		}
		if len(n.enum) > 0 && !slices.Contains(n.enum, s) {
			v.here("must be one of %s, got %q", strings.Join(n.enum, ", "), clip(s))
		}
		if n.pattern != "" && !patternMatch[n.pattern](s) {
			v.here("must match %s, got %q", patterns[n.pattern], clip(s))
		}
		if n.format == "date-time" {
			if err := parseTime(s); err != nil {
				v.here("must be an RFC 3339 time, got %q", clip(s))
			}
		}
	case "number", "integer":
		num, ok := val.(json.Number)
		if !ok {
			v.here("must be %s, got %s", describe(n), jsonKind(val))
			return
		}
		f, err := num.Float64()
		if err != nil || math.IsInf(f, 0) {
			v.here("must be a finite number, got %s", clip(num.String()))
			return
		}
		if n.kind == "integer" {
			if _, ok := parseInt(num); !ok {
				v.here("must be an integer, got %s", clip(num.String()))
				return
			}
		}
		if n.constant != nil && f != float64(n.constant.(int)) {
			v.here("must be %v, got %s", n.constant, num)
		}
		switch {
		case n.min != nil && n.max != nil && (f < *n.min || f > *n.max):
			v.here("must be between %v and %v, got %s", *n.min, *n.max, num)
		case n.min != nil && f < *n.min:
			v.here("must be at least %v, got %s", *n.min, num)
		case n.max != nil && f > *n.max:
			v.here("must be at most %v, got %s", *n.max, num)
		}
	case "boolean":
		if _, ok := val.(bool); !ok {
			v.here("must be a boolean, got %s", jsonKind(val))
		}
	}
}

func describe(n *node) string {
	switch n.kind {
	case "object":
		return "an object"
	case "array":
		return "an array"
	case "integer":
		return "an integer"
	}
	return "a " + n.kind
}

func jsonKind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// holds reports whether the condition's field has its value in obj.
func (c condition) holds(obj map[string]any) bool {
	val, present := obj[c.field]
	return present && val == c.equals
}

// maxExactInt is 2^53: integers above it are not exact as float64.
const maxExactInt = 1 << 53

// parseInt returns the integer a JSON number denotes. As in JSON Schema, a
// number with a zero fraction (1.0, 1e3) is an integer; written that way it
// must be within ±2^53, where float64 is still exact.
func parseInt(num json.Number) (int64, bool) {
	if i, err := strconv.ParseInt(string(num), 10, 64); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxExactInt {
		return 0, false
	}
	return int64(f), true
}

// clip shortens foreign text quoted in errors, on a rune boundary.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	i := 77
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
