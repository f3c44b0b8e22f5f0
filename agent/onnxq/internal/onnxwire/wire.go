// Package onnxwire holds the ONNX protobuf field numbers used by onnxq and
// small, allocation-light helpers to split and build messages with protowire.
// It deliberately avoids generated message types: the agent binary must stay
// small, and splitting into raw fields lets untouched bytes pass through
// unchanged.
package onnxwire

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers from onnx.proto (IR version 10).
const (
	// ModelProto
	ModelIRVersion   protowire.Number = 1
	ModelGraph       protowire.Number = 7
	ModelOpsetImport protowire.Number = 8

	// OperatorSetIdProto
	OpsetDomain  protowire.Number = 1
	OpsetVersion protowire.Number = 2

	// GraphProto
	GraphNode        protowire.Number = 1
	GraphName        protowire.Number = 2
	GraphInitializer protowire.Number = 5
	GraphInput       protowire.Number = 11
	GraphOutput      protowire.Number = 12
	GraphValueInfo   protowire.Number = 13

	// NodeProto
	NodeInput     protowire.Number = 1
	NodeOutput    protowire.Number = 2
	NodeName      protowire.Number = 3
	NodeOpType    protowire.Number = 4
	NodeAttribute protowire.Number = 5
	NodeDomain    protowire.Number = 7

	// AttributeProto
	AttrName    protowire.Number = 1
	AttrF       protowire.Number = 2
	AttrI       protowire.Number = 3
	AttrS       protowire.Number = 4
	AttrT       protowire.Number = 5
	AttrG       protowire.Number = 6
	AttrFloats  protowire.Number = 7
	AttrInts    protowire.Number = 8
	AttrTensors protowire.Number = 10
	AttrGraphs  protowire.Number = 11
	AttrType    protowire.Number = 20

	// TensorProto
	TensorDims         protowire.Number = 1
	TensorDataType     protowire.Number = 2
	TensorFloatData    protowire.Number = 4
	TensorInt32Data    protowire.Number = 5
	TensorInt64Data    protowire.Number = 7
	TensorName         protowire.Number = 8
	TensorRawData      protowire.Number = 9
	TensorExternalData protowire.Number = 13
	TensorDataLocation protowire.Number = 14

	// ValueInfoProto
	ValueInfoName protowire.Number = 1
	ValueInfoType protowire.Number = 2

	// TypeProto / TypeProto.Tensor / TensorShapeProto / Dimension
	TypeTensorType protowire.Number = 1
	TensorElemType protowire.Number = 1
	TensorShape    protowire.Number = 2
	ShapeDim       protowire.Number = 1
	DimValue       protowire.Number = 1
	DimParam       protowire.Number = 2
)

// AttributeProto.AttributeType values.
const (
	AttrTypeFloat  = 1
	AttrTypeInt    = 2
	AttrTypeString = 3
	AttrTypeTensor = 4
	AttrTypeGraph  = 5
	AttrTypeInts   = 7
)

// TensorProto.DataType values.
const (
	DTFloat   = 1
	DTUint8   = 2
	DTInt8    = 3
	DTInt32   = 6
	DTInt64   = 7
	DTFloat16 = 10
)

// DataLocationExternal is TensorProto.DataLocation EXTERNAL.
const DataLocationExternal = 1

// ErrMalformed reports bytes that are not a well-formed protobuf message.
var ErrMalformed = errors.New("malformed protobuf")

// Field is one field of a message. Raw is the complete encoding (tag and
// value) so untouched fields can be copied verbatim.
type Field struct {
	Num   protowire.Number
	Type  protowire.Type
	Raw   []byte
	Bytes []byte // payload for BytesType
	Value uint64 // payload for VarintType, Fixed32Type, Fixed64Type
}

// Split parses b into its top-level fields without copying.
func Split(b []byte) ([]Field, error) {
	var out []Field
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 {
			return nil, fmt.Errorf("%w: bad tag at offset %d: %w", ErrMalformed, off, protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[off+n:])
		if m < 0 {
			return nil, fmt.Errorf("%w: field %d at offset %d: %w", ErrMalformed, num, off, protowire.ParseError(m))
		}
		f := Field{Num: num, Type: typ, Raw: b[off : off+n+m]}
		val := b[off+n : off+n+m]
		switch typ {
		case protowire.BytesType:
			f.Bytes, _ = protowire.ConsumeBytes(val)
		case protowire.VarintType:
			f.Value, _ = protowire.ConsumeVarint(val)
		case protowire.Fixed32Type:
			v, _ := protowire.ConsumeFixed32(val)
			f.Value = uint64(v)
		case protowire.Fixed64Type:
			f.Value, _ = protowire.ConsumeFixed64(val)
		}
		out = append(out, f)
		off += n + m
	}
	return out, nil
}

// Int64s decodes a repeated int64 field occurrence, packed or not, appending
// to dst.
func Int64s(dst []int64, f Field) ([]int64, error) {
	switch f.Type {
	case protowire.VarintType:
		return append(dst, int64(f.Value)), nil
	case protowire.BytesType:
		for b := f.Bytes; len(b) > 0; {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("%w: packed varint: %w", ErrMalformed, protowire.ParseError(n))
			}
			dst = append(dst, int64(v))
			b = b[n:]
		}
		return dst, nil
	}
	return nil, fmt.Errorf("%w: field %d has wire type %d, want varint", ErrMalformed, f.Num, f.Type)
}

// Float32s decodes a repeated float field occurrence, packed or not,
// appending to dst.
func Float32s(dst []float32, f Field) ([]float32, error) {
	switch f.Type {
	case protowire.Fixed32Type:
		return append(dst, math.Float32frombits(uint32(f.Value))), nil
	case protowire.BytesType:
		if len(f.Bytes)%4 != 0 {
			return nil, fmt.Errorf("%w: packed float length %d not a multiple of 4", ErrMalformed, len(f.Bytes))
		}
		return AppendLEFloat32s(dst, f.Bytes), nil
	}
	return nil, fmt.Errorf("%w: field %d has wire type %d, want fixed32", ErrMalformed, f.Num, f.Type)
}

// AppendLEFloat32s decodes little-endian float32 values; len(b) must be a
// multiple of 4 (extra bytes are ignored).
func AppendLEFloat32s(dst []float32, b []byte) []float32 {
	for i := 0; i+4 <= len(b); i += 4 {
		u := uint32(b[i]) | uint32(b[i+1])<<8 | uint32(b[i+2])<<16 | uint32(b[i+3])<<24
		dst = append(dst, math.Float32frombits(u))
	}
	return dst
}

// AppendString appends a string field.
func AppendString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// AppendBytes appends a bytes or embedded message field.
func AppendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// AppendVarint appends an integer field (int32/int64/enum).
func AppendVarint(b []byte, num protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// AppendFloat appends a float field.
func AppendFloat(b []byte, num protowire.Number, v float32) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, math.Float32bits(v))
}

// Tensor describes a tensor to encode as a TensorProto with raw_data.
type Tensor struct {
	Name     string
	Dims     []int64
	DataType int32
	Raw      []byte // little-endian element data
}

// AppendTensor appends the TensorProto encoding of t (without an outer tag).
// Dims are written unpacked, as onnx.proto (proto2, no packed option) and the
// reference serializer do.
func AppendTensor(b []byte, t Tensor) []byte {
	for _, d := range t.Dims {
		b = AppendVarint(b, TensorDims, d)
	}
	b = AppendVarint(b, TensorDataType, int64(t.DataType))
	b = AppendString(b, TensorName, t.Name)
	return AppendBytes(b, TensorRawData, t.Raw)
}

// SizeTensor is the encoded size of t, used to presize buffers.
func SizeTensor(t Tensor) int {
	n := 0
	for _, d := range t.Dims {
		n += 1 + protowire.SizeVarint(uint64(d))
	}
	n += 1 + protowire.SizeVarint(uint64(t.DataType))
	n += 1 + protowire.SizeBytes(len(t.Name))
	n += 1 + protowire.SizeBytes(len(t.Raw))
	return n
}

// Attr is an attribute to encode; exactly one of the value kinds is used,
// selected by Type.
type Attr struct {
	Name string
	Type int
	I    int64
	F    float32
	S    string
	Ints []int64
	T    *Tensor
	G    []byte // encoded GraphProto
}

// AppendAttr appends the AttributeProto encoding of a (without an outer tag).
func AppendAttr(b []byte, a Attr) []byte {
	b = AppendString(b, AttrName, a.Name)
	switch a.Type {
	case AttrTypeFloat:
		b = AppendFloat(b, AttrF, a.F)
	case AttrTypeInt:
		b = AppendVarint(b, AttrI, a.I)
	case AttrTypeString:
		b = AppendString(b, AttrS, a.S)
	case AttrTypeTensor:
		b = AppendBytes(b, AttrT, AppendTensor(nil, *a.T))
	case AttrTypeGraph:
		b = AppendBytes(b, AttrG, a.G)
	case AttrTypeInts:
		for _, v := range a.Ints {
			b = AppendVarint(b, AttrInts, v)
		}
	}
	return AppendVarint(b, AttrType, int64(a.Type))
}

// Node describes a NodeProto to encode.
type Node struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// AppendNode appends the NodeProto encoding of n (without an outer tag).
func AppendNode(b []byte, n Node) []byte {
	for _, s := range n.Inputs {
		b = AppendString(b, NodeInput, s)
	}
	for _, s := range n.Outputs {
		b = AppendString(b, NodeOutput, s)
	}
	if n.Name != "" {
		b = AppendString(b, NodeName, n.Name)
	}
	b = AppendString(b, NodeOpType, n.OpType)
	for _, a := range n.Attrs {
		b = AppendBytes(b, NodeAttribute, AppendAttr(nil, a))
	}
	if n.Domain != "" {
		b = AppendString(b, NodeDomain, n.Domain)
	}
	return b
}
