package protocol

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
)

// The contract wants arrays and objects where Go has nil slices and maps
// ("gpus": [] on a robot without GPUs, "args": {} for a command without
// args), and encoding/json writes null for them. normalize gives a data
// value empty slices and maps in place of nil ones in every field that is
// not omitempty, so what Go senders build encodes as the contract says, and
// a decoded event equals the event its encoding decodes to.

// MarshalJSON encodes the envelope with nil slices and maps in its data
// written as [] and {}. It does not validate; Encode does.
//
// Because Event is a json.Marshaler, a struct that embeds Event (or *Event)
// marshals as the envelope alone: give the envelope a named field instead.
func (ev Event) MarshalJSON() ([]byte, error) {
	type plainEvent Event // without methods: no recursion
	if ev.Data != nil {
		ev.Data = normalize(ev.Data)
	}
	return json.Marshal(plainEvent(ev))
}

// normalize returns d, or a copy of d with empty slices and maps where d has
// nil ones. d itself is never changed: callers may share it.
func normalize(d Data) Data {
	rv := reflect.ValueOf(d)
	if !hasNil(rv) {
		return d
	}
	cp := reflect.New(rv.Type()).Elem()
	cp.Set(rv)
	fixNil(cp)
	return cp.Interface().(Data)
}

// field is one struct field normalize looks at.
type field struct {
	index     []int
	omitEmpty bool
}

var fieldCache sync.Map // reflect.Type → []field

func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if !needsLook(f.Type) {
			continue
		}
		fs = append(fs, field{index: f.Index, omitEmpty: strings.Contains(","+opts+",", ",omitempty,")})
	}
	fieldCache.Store(t, fs)
	return fs
}

// needsLook reports whether values of t may hold a nil slice or map.
func needsLook(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Slice, reflect.Map, reflect.Struct:
		return t != timeType
	case reflect.Pointer:
		return needsLook(t.Elem())
	}
	return false
}

// hasNil reports whether v (a struct, pointer or slice) holds a nil slice or
// map in a field that is not omitempty.
func hasNil(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer:
		return !v.IsNil() && hasNil(v.Elem())
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Struct && v.Type().Elem().Kind() != reflect.Pointer {
			return false
		}
		for i := range v.Len() {
			if hasNil(v.Index(i)) {
				return true
			}
		}
	case reflect.Struct:
		for _, f := range fieldsOf(v.Type()) {
			fv := v.FieldByIndex(f.index)
			if (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.IsNil() {
				if !f.omitEmpty {
					return true
				}
				continue
			}
			if hasNil(fv) {
				return true
			}
		}
	}
	return false
}

// fixNil replaces nil slices and maps in v, which must be settable, copying
// whatever it changes below pointers and in slices so the original stays
// untouched.
func fixNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || !hasNil(v.Elem()) {
			return
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(v.Elem())
		fixNil(p.Elem())
		v.Set(p)
	case reflect.Slice:
		if !hasNil(v) {
			return
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		for i := range s.Len() {
			fixNil(s.Index(i))
		}
		v.Set(s)
	case reflect.Struct:
		for _, f := range fieldsOf(v.Type()) {
			fv := v.FieldByIndex(f.index)
			switch {
			case fv.Kind() == reflect.Slice && fv.IsNil():
				if !f.omitEmpty {
					fv.Set(reflect.MakeSlice(fv.Type(), 0, 0))
				}
			case fv.Kind() == reflect.Map && fv.IsNil():
				if !f.omitEmpty {
					fv.Set(reflect.MakeMap(fv.Type()))
				}
			default:
				fixNil(fv)
			}
		}
	}
}

// UnmarshalJSON decodes and validates an envelope with Decode, so an event
// nested in other JSON (a relay frame, a snapshot) gets its typed data and
// the same checks as a payload.
func (ev *Event) UnmarshalJSON(b []byte) error {
	d, err := Decode(b)
	if err != nil {
		return err
	}
	*ev = *d
	return nil
}
