package session

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/robotfleet/fleetlink/protocol"
)

// matMulModel encodes a minimal ONNX model, Y = MatMul(X, W) with a float
// [n, n] initializer W, at the protobuf wire level.
func matMulModel(n int) []byte {
	msg := func(num protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
	}
	str := func(num protowire.Number, s string) []byte { return msg(num, []byte(s)) }
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	valueInfo := func(name string, dims ...uint64) []byte {
		var shape []byte
		for _, d := range dims {
			shape = append(shape, msg(1, varint(1, d))...)
		}
		tensorType := cat(varint(1, 1), msg(2, shape))
		return cat(str(1, name), msg(2, msg(1, tensorType)))
	}
	raw := make([]byte, 4*n*n)
	for i := range n * n {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(float32(math.Sin(float64(i)))))
	}
	weight := cat(varint(1, uint64(n)), varint(1, uint64(n)), varint(2, 1), str(8, "W"), msg(9, raw))
	node := cat(str(1, "X"), str(1, "W"), str(2, "Y"), str(3, "mm"), str(4, "MatMul"))
	graph := cat(msg(1, node), str(2, "g"), msg(5, weight), msg(11, valueInfo("X", 1, uint64(n))), msg(12, valueInfo("Y", 1, uint64(n))))
	return cat(varint(1, 7), msg(8, varint(2, 13)), msg(7, graph))
}

func TestONNXQuantizePipelines(t *testing.T) {
	e := newEnv(t, nil)
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "mm.onnx"), matMulModel(64), 0o644))

	for _, tc := range []struct{ pipeline, artifact string }{
		{"quantize-int8", "mm.int8.onnx"},
		{"quantize-fp16", "mm.fp16.onnx"},
	} {
		t.Run(tc.pipeline, func(t *testing.T) {
			id := e.startSession(StartRequest{Pipeline: tc.pipeline, Model: "mm.onnx"})
			fin := e.em.waitFinal(t, id, 20*time.Second)
			require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
			res := fin.Data.(protocol.SessionCompleted).Result
			require.Len(t, res.Artifacts, 1)
			assert.Equal(t, tc.artifact, res.Artifacts[0].Path)
			assert.Equal(t, 1.0, res.Metrics["tensors_quantized"])
			assert.Greater(t, res.Metrics["compression_ratio"], 1.5)
			assert.Less(t, res.Artifacts[0].Bytes, int64(64*64*4))
			assert.Contains(t, e.em.types(id, true), protocol.TypeSessionProgress)
		})
	}

	t.Run("invalid model", func(t *testing.T) {
		id := e.startSession(StartRequest{Pipeline: "quantize-int8", Model: "model.onnx"}) // not ONNX
		fin := e.em.waitFinal(t, id, 20*time.Second)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		assert.Equal(t, protocol.FailInvalidModel, fin.Data.(protocol.SessionFailed).Error.Code)
	})
}
