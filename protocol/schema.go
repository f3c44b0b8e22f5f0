package protocol

import (
	"bytes"
	"encoding/json"
)

// SchemaBaseURI is the base of every schema's $id.
const SchemaBaseURI = "https://schemas.fleetlink.dev/v1/"

// schemaJSON renders the JSON Schema (draft 2020-12) of one type from the
// same rules the validator uses.
func schemaJSON(t TypeInfo) []byte {
	s := schemaOf(t.envelope)
	s.set("$schema", "https://json-schema.org/draft/2020-12/schema")
	s.set("$id", SchemaBaseURI+t.Type+".json")
	s.set("title", t.Type)
	s.move("$schema", "$id", "title", "description")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		panic(err) // the schema is built from our own values
	}
	return buf.Bytes()
}

// omap is a JSON object that keeps its keys in insertion order, so schemas
// read in the order of the Go fields.
type omap struct {
	keys []string
	vals map[string]any
}

func newOmap() *omap { return &omap{vals: map[string]any{}} }

func (m *omap) set(k string, v any) {
	if _, ok := m.vals[k]; !ok {
		m.keys = append(m.keys, k)
	}
	m.vals[k] = v
}

// move puts the named keys first, in that order.
func (m *omap) move(first ...string) {
	var keys []string
	for _, k := range first {
		if _, ok := m.vals[k]; ok {
			keys = append(keys, k)
		}
	}
	for _, k := range m.keys {
		found := false
		for _, f := range first {
			found = found || f == k
		}
		if !found {
			keys = append(keys, k)
		}
	}
	m.keys = keys
}

func (m *omap) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		var vb bytes.Buffer
		enc := json.NewEncoder(&vb)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(m.vals[k]); err != nil {
			return nil, err
		}
		buf.Write(bytes.TrimRight(vb.Bytes(), "\n"))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func schemaOf(n *node) *omap {
	s := newOmap()
	if n.doc != "" {
		s.set("description", n.doc)
	}
	if n.kind != "any" {
		if n.nullable {
			s.set("type", []string{n.kind, "null"})
		} else {
			s.set("type", n.kind)
		}
	}
	if n.constant != nil {
		s.set("const", n.constant)
	}
	if len(n.enum) > 0 {
		enum := append([]any(nil), anySlice(n.enum)...)
		if n.nullable {
			enum = append(enum, nil)
		}
		s.set("enum", enum)
	}
	if n.nonEmpty {
		s.set("minLength", 1)
	}
	if n.pattern != "" {
		s.set("pattern", patterns[n.pattern].String())
	}
	if n.format != "" {
		s.set("format", n.format)
	}
	if n.min != nil {
		s.set("minimum", *n.min)
	}
	if n.max != nil {
		s.set("maximum", *n.max)
	}
	switch n.kind {
	case "object":
		if len(n.props) > 0 || len(n.forbidden) > 0 {
			props := newOmap()
			var req []string
			for _, p := range n.props {
				props.set(p.name, schemaOf(p.node))
				if p.required {
					req = append(req, p.name)
				}
			}
			for _, name := range n.forbidden {
				props.set(name, false)
			}
			s.set("properties", props)
			if len(req) > 0 {
				s.set("required", req)
			}
		}
		if n.additional != nil {
			s.set("additionalProperties", schemaOf(n.additional))
		}
		var all []any
		for _, c := range n.conds {
			cond := newOmap()
			ifs := newOmap()
			ifp := newOmap()
			ifp.set(c.field, map[string]any{"const": c.equals})
			ifs.set("properties", ifp)
			ifs.set("required", []string{c.field})
			cond.set("if", ifs)
			then := newOmap()
			props := newOmap()
			for _, name := range c.require {
				props.set(name, map[string]any{"not": map[string]any{"type": "null"}})
			}
			for _, name := range c.forbid {
				props.set(name, map[string]any{"type": "null"})
			}
			if len(c.require) > 0 {
				then.set("required", c.require)
			}
			then.set("properties", props)
			cond.set("then", then)
			all = append(all, cond)
		}
		if len(all) > 0 {
			s.set("allOf", all)
		}
	case "array":
		s.set("items", schemaOf(n.items))
	}
	return s
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
