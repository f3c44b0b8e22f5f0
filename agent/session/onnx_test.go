package session

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/robotfleet/fleetlink/protocol"
)

// matMulModel encodes a minimal ONNX model, Y = MatMul(X, W) with a float
// [n, n] initializer W, at the protobuf wire level.
func matMulModel(n int) []byte { return matMulChain(n, 1) }

// matMulChain is X → MatMul(W) → MatMul(W_1) → ... (layers of them) → Y,
// every weight a float [n, n] initializer.
func matMulChain(n, layers int) []byte {
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
	var graph []byte
	in := "X"
	for l := range layers {
		raw := make([]byte, 4*n*n)
		for i := range n * n {
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(float32(math.Sin(float64(i+l*7)))))
		}
		wn, out := "W", "Y"
		if l > 0 {
			wn = "W_" + strconv.Itoa(l)
		}
		if l < layers-1 {
			out = "H_" + strconv.Itoa(l)
		}
		weight := cat(varint(1, uint64(n)), varint(1, uint64(n)), varint(2, 1), str(8, wn), msg(9, raw))
		graph = append(graph, msg(1, cat(str(1, in), str(1, wn), str(2, out), str(3, "mm"+strconv.Itoa(l)), str(4, "MatMul")))...)
		graph = append(graph, msg(5, weight)...)
		in = out
	}
	graph = cat(graph, str(2, "g"), msg(11, valueInfo("X", 1, uint64(n))), msg(12, valueInfo("Y", 1, uint64(n))))
	return cat(varint(1, 7), msg(8, varint(2, 13)), msg(7, graph))
}

// TestONNXRunnerStreamsProgress runs the runner itself (no manager, whose
// 4-per-second limit would merge updates): the child's progress reaches it
// once per layer, each naming the layer, the percentage rising with the
// layers' bytes instead of jumping to 100.
func TestONNXRunnerStreamsProgress(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "chain.onnx")
	require.NoError(t, os.WriteFile(model, matMulChain(48, 4), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "out"), 0o755))
	job := &Job{SessionID: "s-1", Pipeline: &DefaultPipelines()[0], ModelPath: model,
		Params: map[string]any{"mode": "int8", "per_channel": true, "min_elements": int64(1024), "rounding": "sum"},
		Dir:    dir, OutputDir: filepath.Join(dir, "out"), Log: io.Discard, CancelGrace: time.Second}
	var ups []Update
	out, err := onnxRunner{}.Run(context.Background(), job, func(u Update) { ups = append(ups, u) })
	require.NoError(t, err)
	assert.Equal(t, 4.0, out.Metrics["tensors_quantized"])
	require.Len(t, ups, 6, "%+v", ups) // read, 4 layers, write
	var quantize []string
	for i, u := range ups {
		if i > 0 {
			assert.Greater(t, u.Percent, ups[i-1].Percent, "update %d: %+v", i, ups)
		}
		if u.Stage == "quantize" {
			quantize = append(quantize, u.Message)
		}
	}
	assert.Less(t, ups[0].Percent, 10.0)
	assert.InDelta(t, 100, ups[5].Percent, 1e-9)
	require.Len(t, quantize, 4)
	for i, m := range quantize {
		name := "W"
		if i > 0 {
			name = "W_" + strconv.Itoa(i)
		}
		assert.True(t, strings.HasPrefix(m, name+": int8, SNR "), m)
	}
	// Equal layers: the quarter steps of the quantize stage.
	assert.InDelta(t, ups[2].Percent-ups[1].Percent, ups[3].Percent-ups[2].Percent, 1e-9)
}

func TestONNXQuantizePipelines(t *testing.T) {
	e := newEnv(t, nil)
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "mm.onnx"), matMulModel(64), 0o644))

	for _, tc := range []struct{ pipeline, mode string }{
		{"quantize-int8", "int8"},
		{"quantize-fp16", "fp16"},
	} {
		t.Run(tc.pipeline, func(t *testing.T) {
			id := e.startSession(StartRequest{Pipeline: tc.pipeline, Model: "mm.onnx"})
			fin := e.em.waitFinal(t, id, 20*time.Second)
			require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
			res := fin.Data.(protocol.SessionCompleted).Result
			require.Len(t, res.Artifacts, 1)
			assert.Equal(t, "mm."+tc.mode+".onnx", res.Artifacts[0].Path)
			assert.Equal(t, 1.0, res.Metrics["tensors_quantized"])
			assert.Greater(t, res.Metrics["compression_ratio"], 1.5)
			assert.Equal(t, res.Metrics["snr_db_worst_1"], res.Metrics["snr_db_min"])
			assert.Greater(t, res.Metrics["bytes_before_matmul"], res.Metrics["bytes_after_matmul"])
			assert.Less(t, res.Artifacts[0].Bytes, int64(64*64*4))
			assert.Contains(t, e.em.types(id, true), protocol.TypeSessionProgress)

			// The report names the layers the metrics only number.
			b, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, quantizeReport))
			require.NoError(t, err)
			var rep struct {
				Worst []struct {
					Name  string  `json:"name"`
					SNRdB float64 `json:"snr_db"`
				} `json:"worst"`
			}
			require.NoError(t, json.Unmarshal(b, &rep))
			require.Len(t, rep.Worst, 1)
			assert.Equal(t, "W", rep.Worst[0].Name)
			assert.Equal(t, res.Metrics["snr_db_min"], rep.Worst[0].SNRdB)
			log, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "session.log"))
			require.NoError(t, err)
			assert.Contains(t, string(log), `worst 1: "W" (MatMul, `+tc.mode+`)`)
		})
	}

	t.Run("params reach the quantizer", func(t *testing.T) {
		id := e.startSession(StartRequest{Pipeline: "quantize-int8", Model: "mm.onnx",
			Params: map[string]any{"asymmetric": true, "rounding": "nearest"}})
		fin := e.em.waitFinal(t, id, 20*time.Second)
		require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
		b, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, quantizeReport))
		require.NoError(t, err)
		assert.Contains(t, string(b), `"encoding": "int8 asymmetric"`)
		log, err := os.ReadFile(filepath.Join(e.stateDir, "sessions", id, "session.log"))
		require.NoError(t, err)
		assert.Contains(t, string(log), "rounding=nearest asymmetric=true")
	})

	t.Run("invalid model", func(t *testing.T) {
		id := e.startSession(StartRequest{Pipeline: "quantize-int8", Model: "model.onnx"}) // not ONNX
		fin := e.em.waitFinal(t, id, 20*time.Second)
		require.Equal(t, protocol.TypeSessionFailed, fin.Type)
		assert.Equal(t, protocol.FailInvalidModel, fin.Data.(protocol.SessionFailed).Error.Code)
	})
}

// TestONNXQuantizeMemoryLimit runs models too big for the pipeline's
// max_memory_bytes: the session fails with an error saying so, and the
// manager (the agent) keeps running sessions.
func TestONNXQuantizeMemoryLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		p := DefaultPipelines()[0]
		p.Name, p.MaxMemoryBytes = "quantize-small", 48<<20
		c.Pipelines = append(c.Pipelines, p)
	})
	// 3,000² floats = 36 MB: under the cap, so the child starts, reads
	// the file and runs out while it quantizes (file, decoded floats and
	// int8 copy are ~2.3× the file).
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "big.onnx"), matMulModel(3000), 0o644))
	// 4,000² floats = 64 MB: over the cap, refused before any child runs.
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "huge.onnx"), matMulModel(4000), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "mm.onnx"), matMulModel(64), 0o644))

	for _, tc := range []struct{ model, msg string }{
		{"big.onnx", "MiB, more than the pipeline's max_memory_bytes (48 MiB); only this session failed"},
		{"huge.onnx", "above the pipeline's max_memory_bytes (50331648)"},
	} {
		t.Run(tc.model, func(t *testing.T) {
			id := e.startSession(StartRequest{Pipeline: "quantize-small", Model: tc.model})
			fin := e.em.waitFinal(t, id, 60*time.Second)
			require.Equal(t, protocol.TypeSessionFailed, fin.Type, "%+v", fin.Data)
			f := fin.Data.(protocol.SessionFailed)
			assert.Equal(t, protocol.FailRunnerError, f.Error.Code)
			assert.Contains(t, f.Error.Message, tc.msg, "detail: %s", f.Error.Detail)
			ents, err := os.ReadDir(filepath.Join(e.stateDir, "sessions", id, "output"))
			require.NoError(t, err)
			assert.Empty(t, ents, "a failed run leaves no files behind")

			// The agent goes on: the next session on the same pipeline works.
			id = e.startSession(StartRequest{Pipeline: "quantize-small", Model: "mm.onnx"})
			fin = e.em.waitFinal(t, id, 20*time.Second)
			require.Equal(t, protocol.TypeSessionCompleted, fin.Type, "%+v", fin.Data)
		})
	}
}

// TestONNXQuantizeCancelKillsChild cancels a session whose child hangs and
// ignores SIGTERM: the session ends cancelled and the child is gone.
func TestONNXQuantizeCancelKillsChild(t *testing.T) {
	testHookChildRequest = func(r *childRequest) { r.Hold = true }
	t.Cleanup(func() { testHookChildRequest = nil })
	e := newEnv(t, nil)
	require.NoError(t, os.WriteFile(filepath.Join(e.modelDir, "mm.onnx"), matMulModel(64), 0o644))
	id := e.startSession(StartRequest{Pipeline: "quantize-int8", Model: "mm.onnx"})
	e.em.waitType(t, id, protocol.TypeSessionProgress, 10*time.Second)
	var pgid int
	require.Eventually(t, func() bool {
		e.m.mu.Lock()
		defer e.m.mu.Unlock()
		pgid = e.m.sessions[id].rec.PGID
		return pgid > 0
	}, 5*time.Second, 10*time.Millisecond, "the child's process group was not journaled")
	require.True(t, alive(pgid))

	_, err := e.m.Cancel(id, "too slow", "alice")
	require.NoError(t, err)
	fin := e.em.waitFinal(t, id, 10*time.Second)
	require.Equal(t, protocol.TypeSessionCancelled, fin.Type)
	requireGone(t, []int{pgid})
}

// TestQuantizeChildProtocol runs the child's main in process: one progress
// line per tensor between read and write, then the metrics; the log and
// the report file name the layers.
func TestQuantizeChildProtocol(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "mm.onnx")
	require.NoError(t, os.WriteFile(in, matMulModel(64), 0o644))
	req, _ := json.Marshal(childRequest{In: in, Out: filepath.Join(dir, "out.onnx"), Report: filepath.Join(dir, "r.json")})
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, QuantizeChild(bytes.NewReader(req), &stdout, &stderr), stderr.String())
	var lines []childLine
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var cl childLine
		require.NoError(t, json.Unmarshal([]byte(l), &cl), l)
		lines = append(lines, cl)
	}
	require.Len(t, lines, 4)
	for i, l := range lines[:3] {
		require.NotNil(t, l.Progress, "line %d", i)
		assert.Equal(t, lines[0].Progress.Total, l.Progress.Total)
		if i > 0 {
			assert.Greater(t, l.Progress.Done, lines[i-1].Progress.Done)
		}
	}
	assert.Equal(t, lines[2].Progress.Total, lines[2].Progress.Done)
	assert.Equal(t, "quantize", lines[1].Progress.Stage)
	assert.Equal(t, 1.0, lines[3].Metrics["tensors_quantized"])
	assert.Contains(t, stderr.String(), `worst 1: "W"`)
	assert.FileExists(t, filepath.Join(dir, "r.json"))

	for _, bad := range []string{"", "{", `{"in":"x"}`, strings.Repeat(" ", maxChildRequest+1)} {
		stderr.Reset()
		assert.Equal(t, childExitRequest, QuantizeChild(strings.NewReader(bad), io.Discard, &stderr), bad)
		assert.Contains(t, stderr.String(), "bad request")
	}
	stdout.Reset()
	req, _ = json.Marshal(childRequest{In: filepath.Join(dir, "r.json"), Out: filepath.Join(dir, "x.onnx")})
	require.Equal(t, childExitFailed, QuantizeChild(bytes.NewReader(req), &stdout, io.Discard))
	var cl childLine
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &cl))
	require.NotNil(t, cl.Error)
	assert.True(t, cl.Error.InvalidModel)
}

func TestChildDiedMessages(t *testing.T) {
	code := func(c int) *int { return &c }
	for _, tc := range []struct {
		name, head string
		code       *int
		msg        string
	}{
		{"go fatal error", "runtime: out of memory: cannot allocate 67108864-byte block\nfatal error: out of memory\n", code(2), "most likely out of memory"},
		{"fault under the cap", "SIGSEGV: segmentation violation\nPC=0x434f5d", code(2), "most likely out of memory"},
		{"oom killer", "", code(128 + 9), "most likely out of memory"},
		{"other", "panic: something else", code(2), "the quantizer process died: exit status 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re := childDied(errors.New("exit status 2"), tc.code, tc.head, "tail", 64<<20)
			assert.Equal(t, protocol.FailRunnerError, re.Code)
			assert.Contains(t, re.Message, tc.msg)
		})
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m[1]*.int8.onnx")
	for _, n := range []string{".m[1]*.int8.onnx.tmp-123", ".m[1]*.int8.onnx.tmp-9", "m[1]*.int8.onnx", ".other.tmp-1", "keep"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), nil, 0o644))
	}
	removeTemps(out)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"m[1]*.int8.onnx", ".other.tmp-1", "keep"}, names)
}

func TestZeroPointParams(t *testing.T) {
	o := quantizeOptions(map[string]any{"symmetric": true})
	if !o.Symmetric || o.Asymmetric {
		t.Fatalf("symmetric param: %+v", o)
	}
	o = quantizeOptions(map[string]any{"asymmetric": true})
	if o.Symmetric || !o.Asymmetric {
		t.Fatalf("asymmetric param: %+v", o)
	}
	_, err := onnxRunner{}.Run(context.Background(), &Job{Params: map[string]any{"asymmetric": true, "symmetric": true}}, func(Update) {})
	var re *RunError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "asymmetric and symmetric") {
		t.Fatalf("both: %v", err)
	}
}
