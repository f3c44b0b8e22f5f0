package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// This file fills typed values from the generic JSON tree the validator has
// already checked, so a payload is parsed once. It also makes decoding agree
// with validation exactly: encoding/json matches object keys to struct
// fields case-insensitively, which would let {"percent":50,"PERCENT":500}
// validate as 50 and decode as 500; here a field is filled from its exact key
// only, as the rules and the JSON Schema read it.

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// fill sets rv from val, a value decoded with json.Decoder.UseNumber that
// conforms to n. Values of `any` fields become what encoding/json would make
// (float64 for numbers), so callers see the usual types.
func fill(path *pathBuf, n *node, val any, rv reflect.Value) error {
	if val == nil {
		return nil // null or absent: the zero value
	}
	t := rv.Type()
	if t == timeType {
		s, ok := val.(string)
		if !ok {
			return fillErr(path, "a string", val)
		}
		tm, err := parseWireTime(s)
		if err != nil {
			return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: "must be an RFC 3339 time, got " + strconv.Quote(clip(s))}}}
		}
		rv.Set(reflect.ValueOf(tm))
		return nil
	}
	if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && reflect.PointerTo(t).Implements(unmarshalerType) {
		b, err := json.Marshal(val) // json.Number marshals as its literal
		if err != nil {
			return fmt.Errorf("%s: %w", path.String(), err)
		}
		if err := rv.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
			return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: err.Error()}}}
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := fill(path, n, val, p.Elem()); err != nil {
			return err
		}
		rv.Set(p)
	case reflect.Interface:
		v, err := plain(path, val)
		if err != nil {
			return err
		}
		rv.Set(reflect.ValueOf(v))
	case reflect.Struct:
		obj, ok := val.(map[string]any)
		if !ok {
			return fillErr(path, "an object", val)
		}
		for _, p := range n.props {
			pv, present := obj[p.name]
			if !present || p.index == nil {
				continue
			}
			path.push(p.name)
			err := fill(path, p.node, pv, rv.FieldByIndex(p.index))
			path.pop()
			if err != nil {
				return err
			}
		}
		fixNil(rv) // absent arrays and objects decode as empty, as they re-encode
	case reflect.Slice:
		arr, ok := val.([]any)
		if !ok {
			return fillErr(path, "an array", val)
		}
		s := reflect.MakeSlice(t, len(arr), len(arr))
		for i, e := range arr {
			path.pushIdx(i)
			err := fill(path, n.items, e, s.Index(i))
			path.pop()
			if err != nil {
				return err
			}
		}
		rv.Set(s)
	case reflect.Map:
		obj, ok := val.(map[string]any)
		if !ok || t.Key().Kind() != reflect.String {
			return fillErr(path, "an object", val)
		}
		m := reflect.MakeMapWithSize(t, len(obj))
		for k, e := range obj {
			ev := reflect.New(t.Elem()).Elem()
			path.push(k)
			err := fill(path, n.additional, e, ev)
			path.pop()
			if err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), ev)
		}
		rv.Set(m)
	case reflect.String:
		s, ok := val.(string)
		if !ok {
			return fillErr(path, "a string", val)
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := val.(bool)
		if !ok {
			return fillErr(path, "a boolean", val)
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		num, ok := val.(json.Number)
		if !ok {
			return fillErr(path, "an integer", val)
		}
		i, ok := parseInt(num)
		if !ok || rv.OverflowInt(i) {
			return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: fmt.Sprintf("must be an integer that fits in %d bits, got %s", t.Bits(), clip(num.String()))}}}
		}
		rv.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		num, ok := val.(json.Number)
		if !ok {
			return fillErr(path, "an integer", val)
		}
		i, ok := parseInt(num)
		if !ok || i < 0 || rv.OverflowUint(uint64(i)) {
			return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: fmt.Sprintf("must be a non-negative integer that fits in %d bits, got %s", t.Bits(), clip(num.String()))}}}
		}
		rv.SetUint(uint64(i))
	case reflect.Float32, reflect.Float64:
		num, ok := val.(json.Number)
		if !ok {
			return fillErr(path, "a number", val)
		}
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil || math.IsInf(f, 0) || rv.OverflowFloat(f) {
			return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: "must be a finite number, got " + clip(num.String())}}}
		}
		rv.SetFloat(f)
	default:
		return fmt.Errorf("%s: no decoder for Go type %s", path.String(), t)
	}
	return nil
}

func fillErr(path *pathBuf, want string, val any) error {
	return &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: "must be " + want + ", got " + jsonKind(val)}}}
}

// plain turns a UseNumber tree into what encoding/json decodes into `any`:
// numbers become float64. It converts in place. A number too large for
// float64 is an error, as with encoding/json: it could not be re-encoded.
func plain(path *pathBuf, val any) (any, error) {
	switch v := val.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return nil, &ValidationError{Fields: []FieldError{{Path: path.String(), Msg: "must be a finite number, got " + clip(v.String())}}}
		}
		return f, nil
	case map[string]any:
		for k, e := range v {
			path.push(k)
			pe, err := plain(path, e)
			path.pop()
			if err != nil {
				return nil, err
			}
			v[k] = pe
		}
	case []any:
		for i, e := range v {
			path.pushIdx(i)
			pe, err := plain(path, e)
			path.pop()
			if err != nil {
				return nil, err
			}
			v[i] = pe
		}
	}
	return val, nil
}
