package session

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/robotfleet/fleetlink/agent/onnxq"
)

// The built-in quantizer runs in a child process, so that a model too big
// for the robot's memory kills the session and not the agent (its uplink,
// metrics and spool). The child is the agent's own executable started with
// QuantizeChildArg as its first argument and quantizeChildEnv set; it reads
// one childRequest as JSON on stdin, caps its own memory, and writes JSON
// lines on stdout (progress, then a result or an error) and its log on
// stderr.
const (
	// QuantizeChildArg is the hidden robot-agent subcommand of the child.
	QuantizeChildArg = "onnx-quantize-child"
	// quantizeChildEnv marks the child's environment. The package's init
	// checks it, so any binary that links the runner can be the child: the
	// robot-agent, and the test binaries of the packages that run sessions.
	quantizeChildEnv = "FLEETLINK_ONNXQ_CHILD"
	// maxChildRequest bounds the request the child reads from stdin.
	maxChildRequest = 64 << 10
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == QuantizeChildArg && os.Getenv(quantizeChildEnv) == "1" {
		os.Exit(QuantizeChild(os.Stdin, os.Stdout, os.Stderr))
	}
}

// childRequest is what the runner sends the child.
type childRequest struct {
	In     string        `json:"in"`
	Out    string        `json:"out"`
	Report string        `json:"report"` // the quality report's path; empty = none
	Opts   onnxq.Options `json:"options"`
	// MaxMemory caps the child's data segment (RLIMIT_DATA, on top of what
	// it uses at start) and is its Go memory limit; zero = no cap.
	MaxMemory int64 `json:"max_memory"`
	// Hold makes the child report once and then hang, deaf to SIGTERM:
	// the tests' stand-in for a child stuck in a huge allocation.
	Hold bool `json:"hold,omitempty"`
}

// childLine is one line of the child's stdout.
type childLine struct {
	Progress *onnxq.Progress    `json:"progress,omitempty"`
	Metrics  map[string]float64 `json:"metrics,omitempty"` // the result, on success
	Error    *childError        `json:"error,omitempty"`
}

type childError struct {
	Message      string `json:"message"`
	InvalidModel bool   `json:"invalid_model,omitempty"`
	OutOfMemory  bool   `json:"out_of_memory,omitempty"`
}

// Exit codes of the child besides 0.
const (
	childExitFailed   = 1 // an error line was written
	childExitRequest  = 3 // the request was unusable
	childExitStopped  = 4 // SIGTERM (cancel) stopped it
	childExitReadFail = 5
)

// QuantizeChild is the child's main: it runs one quantization described on
// stdin and reports on stdout and stderr. It returns the exit code.
func QuantizeChild(stdin io.Reader, stdout, stderr io.Writer) int {
	b, err := io.ReadAll(io.LimitReader(stdin, maxChildRequest+1))
	if err != nil {
		fmt.Fprintf(stderr, "onnx-quantize-child: read request: %v\n", err)
		return childExitReadFail
	}
	var req childRequest
	if len(b) > maxChildRequest {
		err = fmt.Errorf("request over %d bytes", maxChildRequest)
	} else if err = json.Unmarshal(b, &req); err == nil && (req.In == "" || req.Out == "") {
		err = errors.New("request needs in and out")
	}
	if err != nil {
		fmt.Fprintf(stderr, "onnx-quantize-child: bad request: %v (this subcommand is started by the agent's onnx-quantize runner)\n", err)
		return childExitRequest
	}
	var mu sync.Mutex // serializes stdout lines
	out := bufio.NewWriter(stdout)
	enc := json.NewEncoder(out)
	// Lines stay far below the runner's 64 KiB line limit whatever the
	// model's tensor names.
	emit := func(l childLine) {
		if l.Progress != nil {
			l.Progress.Message = clip(l.Progress.Message, 1024)
		}
		if l.Error != nil {
			l.Error.Message = clip(l.Error.Message, 4096)
		}
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(l)
		_ = out.Flush()
	}
	if req.MaxMemory > 0 {
		if err := limitMemory(req.MaxMemory); err != nil {
			fmt.Fprintf(stderr, "onnx-quantize-child: memory limit: %v\n", err)
			return childExitRequest
		}
		go watchMemory(req.MaxMemory, func(rss int64) {
			emit(childLine{Error: &childError{OutOfMemory: true, Message: fmt.Sprintf(
				"the quantizer ran out of memory: it used %d MiB, more than the pipeline's max_memory_bytes (%d MiB); only this session failed",
				rss>>20, req.MaxMemory>>20)}})
			os.Exit(childExitFailed)
		})
	}
	if req.Hold {
		signal.Ignore(syscall.SIGTERM)
		emit(childLine{Progress: &onnxq.Progress{Stage: onnxq.StageRead, Message: "holding"}})
		for {
			time.Sleep(time.Hour)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	res, err := onnxq.QuantizeFile(ctx, req.In, req.Out, req.Opts, func(p onnxq.Progress) {
		emit(childLine{Progress: &p})
	})
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "onnx-quantize: stopped\n")
			return childExitStopped
		}
		emit(childLine{Error: &childError{Message: err.Error(), InvalidModel: errors.Is(err, onnxq.ErrInvalidModel)}})
		return childExitFailed
	}
	res.WriteLog(stderr)
	if req.Report != "" {
		if err := res.WriteReportFile(req.Report); err != nil {
			emit(childLine{Error: &childError{Message: fmt.Sprintf("write report: %v", err)}})
			return childExitFailed
		}
	}
	emit(childLine{Metrics: res.Metrics()})
	return 0
}

const (
	// watchMemoryEvery is how often the child checks its resident memory.
	watchMemoryEvery = 10 * time.Millisecond
	// hardCapSlack is added to the data segment cap: the Go heap commits
	// address space in 64 MiB arenas, well ahead of resident memory.
	hardCapSlack = 128 << 20
)

// limitMemory bounds the child's memory in three ways, softest first:
//   - max is the Go runtime's soft limit, so the GC works harder near it;
//   - watchMemory (started by the caller) ends the child with a clear error
//     once its resident memory passes max;
//   - a hard cap on the data segment at 2*max + hardCapSlack above what it
//     uses now (RLIMIT_DATA counts the writable mappings the heap commits,
//     unlike RLIMIT_AS, which also counts the runtime's address
//     reservations) stops an allocation too large and too fast for the
//     watch. The slack covers the heap's 64 MiB arena steps. Go does
//     not recover from a failed mmap: the child then dies with a runtime
//     fatal error, which the runner also reports as out of memory.
//
// It also makes the child the kernel's first choice when the machine runs
// out of memory, so the OOM killer takes the quantizer, not the agent.
func limitMemory(max int64) error {
	_ = os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0) // best effort
	debug.SetMemoryLimit(max)
	used, err := procStatusBytes("VmData")
	if err != nil {
		return err
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_DATA, &rl); err != nil {
		return fmt.Errorf("getrlimit RLIMIT_DATA: %w", err)
	}
	// Never above a hard limit someone else set (raising it needs
	// privileges); the cap only tightens.
	lim := min(uint64(used+2*max+hardCapSlack), rl.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: lim, Max: lim}); err != nil {
		return fmt.Errorf("setrlimit RLIMIT_DATA %d: %w", lim, err)
	}
	return nil
}

// watchMemory calls over once the process's resident memory exceeds max.
func watchMemory(max int64, over func(rss int64)) {
	t := time.NewTicker(watchMemoryEvery)
	defer t.Stop()
	for range t.C {
		if rss, err := procStatusBytes("VmRSS"); err == nil && rss > max {
			over(rss)
			return
		}
	}
}

// procStatusBytes reads a kB field of /proc/self/status in bytes.
func procStatusBytes(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/self/status %s: %w", field, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/self/status: no %s", field)
}

// physicalMemory returns MemTotal of /proc/meminfo in bytes, or 0.
func physicalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
