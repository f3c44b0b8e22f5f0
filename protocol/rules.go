package protocol

import (
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// node is one compiled rule set: what a JSON value must look like. It is
// built once per Go type from struct tags, and serves both the validator
// (validate.go) and the JSON Schema generator (schema.go).
type node struct {
	kind       string // object, array, string, number, integer, boolean, any
	nullable   bool
	props      []prop // object: properties in declaration order
	forbidden  []string
	items      *node // array items
	additional *node // object with free keys (Go map)
	enum       []string
	constant   any
	pattern    string // name of a pattern in patterns
	format     string // "date-time"
	nonEmpty   bool   // string: at least one character
	min, max   *float64
	doc        string
	conds      []condition // object: rules that span fields
}

type prop struct {
	name     string
	required bool
	node     *node
	index    []int // the Go field, for reflect.Value.FieldByIndex; nil in the envelope
}

// condition is a rule that spans fields of one object, which struct tags
// cannot say: when field equals value, the fields in require must be present
// (and not null) and those in forbid absent (or null). Both the validator and
// the JSON Schema (as if/then) use it.
type condition struct {
	field   string
	equals  any // string or bool
	require []string
	forbid  []string
}

// conditioner is implemented by data types with cross-field rules.
type conditioner interface {
	conditions() []condition
}

var conditionerType = reflect.TypeFor[conditioner]()

// patterns are the named string patterns rules may use; the regexps go
// into the schemas.
var patterns = map[string]*regexp.Regexp{
	"id":     idRe,
	"sha256": regexp.MustCompile(`^[0-9a-f]{64}$`),
}

// patternMatch are the same patterns as code, for speed; a test holds each
// equal to its regexp.
var patternMatch = map[string]func(string) bool{
	"id":     ValidID,
	"sha256": isSHA256Hex,
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

var (
	nodeMu    sync.Mutex
	nodeCache = map[reflect.Type]*node{}
)

var (
	timeType = reflect.TypeFor[Time]()
	anyType  = reflect.TypeFor[any]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// nodeFor returns the compiled rules of Go type t.
func nodeFor(t reflect.Type) *node {
	nodeMu.Lock()
	defer nodeMu.Unlock()
	return buildNode(t)
}

func buildNode(t reflect.Type) *node {
	if n, ok := nodeCache[t]; ok {
		return n
	}
	var n *node
	switch {
	case t == timeType:
		n = &node{kind: "string", format: "date-time"}
	case t == anyType || t == rawType:
		n = &node{kind: "any"}
	case t.Kind() == reflect.Pointer:
		inner := *buildNode(t.Elem())
		inner.nullable = true
		n = &inner
	case t.Kind() == reflect.Struct:
		n = &node{kind: "object"}
		nodeCache[t] = n // before the fields, for recursive types
		addFields(n, t)
		if t.Implements(conditionerType) {
			n.conds = reflect.Zero(t).Interface().(conditioner).conditions()
		}
		return n
	case t.Kind() == reflect.Slice:
		n = &node{kind: "array", items: buildNode(t.Elem())}
	case t.Kind() == reflect.Map:
		n = &node{kind: "object", additional: buildNode(t.Elem())}
	case t.Kind() == reflect.String:
		n = &node{kind: "string"}
	case t.Kind() == reflect.Bool:
		n = &node{kind: "boolean"}
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		n = &node{kind: "integer"}
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		n = &node{kind: "number"}
	case t.Kind() == reflect.Interface:
		n = &node{kind: "any"}
	default:
		panic(fmt.Sprintf("protocol: no rules for Go type %s", t))
	}
	nodeCache[t] = n
	return n
}

func addFields(n *node, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			// Embedded struct: its fields are promoted, as encoding/json does.
			emb := buildNode(f.Type)
			for _, p := range emb.props {
				p.index = append(append([]int(nil), f.Index...), p.index...)
				n.props = append(n.props, p)
			}
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		base := buildNode(f.Type)
		fn := *base // a copy: field rules must not leak into the shared type node
		p := prop{name: name, node: &fn, index: f.Index}
		if doc := f.Tag.Get("doc"); doc != "" {
			fn.doc = doc
		}
		target := &fn // where value rules go: the field, or its elements
		if fn.kind == "array" || (fn.kind == "object" && fn.additional != nil) {
			var elem node
			if fn.items != nil {
				elem = *fn.items
				target = &elem
				fn.items = target
			} else {
				elem = *fn.additional
				target = &elem
				fn.additional = target
			}
		}
		for _, r := range strings.Split(f.Tag.Get("v"), ",") {
			key, val, _ := strings.Cut(r, "=")
			switch key {
			case "":
			case "required":
				p.required = true
			case "nullable":
				fn.nullable = true
			case "min":
				target.min = mustFloat(t, f, val)
			case "max":
				target.max = mustFloat(t, f, val)
			case "enum":
				target.enum = strings.Split(val, "|")
			case "pattern":
				if patterns[val] == nil {
					panic(fmt.Sprintf("protocol: %s.%s: unknown pattern %q", t, f.Name, val))
				}
				target.pattern = val
			case "format":
				target.format = val
			case "nonempty":
				target.nonEmpty = true
			default:
				panic(fmt.Sprintf("protocol: %s.%s: unknown rule %q", t, f.Name, key))
			}
		}
		n.props = append(n.props, p)
	}
}

func mustFloat(t reflect.Type, f reflect.StructField, s string) *float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		panic(fmt.Sprintf("protocol: %s.%s: bad number %q", t, f.Name, s))
	}
	return &v
}
