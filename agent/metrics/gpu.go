package metrics

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
)

// nvidiaQuery is the field list asked of nvidia-smi, in ParseNvidiaSMI's order.
const nvidiaQuery = "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw"

// Nvidia reads NVIDIA GPUs with nvidia-smi --query-gpu.
type Nvidia struct {
	bin     string
	timeout time.Duration
}

// NewNvidia finds the nvidia-smi binary; ErrNoGPU when it is not installed.
func NewNvidia(bin string) (*Nvidia, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoGPU, err)
	}
	return &Nvidia{bin: path, timeout: 3 * time.Second}, nil
}

// Name returns "nvidia".
func (n *Nvidia) Name() string { return "nvidia" }

// GPUs runs nvidia-smi once.
func (n *Nvidia) GPUs(ctx context.Context) ([]protocol.GPU, error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.bin, "--query-gpu="+nvidiaQuery, "--format=csv,noheader,nounits").Output()
	if err != nil {
		return nil, fmt.Errorf("nvidia-smi: %w", err)
	}
	return ParseNvidiaSMI(out)
}

// ParseNvidiaSMI parses `nvidia-smi --query-gpu=index,name,utilization.gpu,
// memory.used,memory.total,temperature.gpu,power.draw
// --format=csv,noheader,nounits` (MiB, °C, W). "[N/A]" and
// "[Not Supported]" read as 0.
func ParseNvidiaSMI(out []byte) ([]protocol.GPU, error) {
	gpus := []protocol.GPU{}
	for i, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, ",")
		if len(f) != 7 {
			return nil, fmt.Errorf("%w: nvidia-smi line %d has %d fields, want 7: %q", ErrParse, i+1, len(f), line)
		}
		for j := range f {
			f[j] = strings.TrimSpace(f[j])
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("%w: nvidia-smi line %d: index %q", ErrParse, i+1, f[0])
		}
		gpus = append(gpus, protocol.GPU{
			Index: idx, Name: f[1], UtilPercent: clamp(num(f[2])),
			MemUsed: int64(num(f[3]) * (1 << 20)), MemTotal: int64(num(f[4]) * (1 << 20)),
			TempC: num(f[5]), PowerW: max(num(f[6]), 0),
		})
	}
	return gpus, nil
}

// num parses a number, reading the "[N/A]"-style markers as 0.
func num(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return v
}

// jetsonLoadFiles are where Jetson kernels expose the GPU load in per mille
// (Nano/TX2/Xavier: gpu.0; Orin: the 17000000 ga10b node).
var jetsonLoadFiles = []string{
	"devices/gpu.0/load",
	"devices/platform/gpu.0/load",
	"devices/platform/17000000.ga10b/load",
	"devices/platform/bus@0/17000000.gpu/load",
	"devices/platform/17000000.gv11b/load",
}

// Jetson reads an NVIDIA Jetson's integrated GPU from sysfs: load, the
// GPU thermal zone, and the shared memory from /proc/meminfo.
type Jetson struct {
	sys, load, name string
}

// NewJetson finds the GPU load file under sysRoot; ErrNoGPU when absent.
func NewJetson(sysRoot string) (*Jetson, error) {
	for _, f := range jetsonLoadFiles {
		p := filepath.Join(sysRoot, f)
		if _, err := os.Stat(p); err == nil {
			name := "Jetson GPU"
			// The device tree model names the board, e.g. "NVIDIA Jetson Nano Developer Kit".
			if b, err := os.ReadFile(filepath.Join(sysRoot, "firmware/devicetree/base/model")); err == nil {
				name = strings.TrimSpace(string(bytes.TrimRight(b, "\x00")))
			}
			return &Jetson{sys: sysRoot, load: p, name: name}, nil
		}
	}
	return nil, fmt.Errorf("%w: no Jetson GPU load file under %s", ErrNoGPU, sysRoot)
}

// Name returns "jetson".
func (j *Jetson) Name() string { return "jetson" }

// GPUs reads one sample.
func (j *Jetson) GPUs(ctx context.Context) ([]protocol.GPU, error) {
	raw, err := os.ReadFile(j.load)
	if err != nil {
		return nil, fmt.Errorf("jetson gpu load: %w", err)
	}
	perMille, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
	if err != nil {
		return nil, fmt.Errorf("%w: jetson gpu load %q", ErrParse, raw)
	}
	g := protocol.GPU{Index: 0, Name: j.name, UtilPercent: clamp(perMille / 10)}
	for _, z := range ThermalZones(j.sys) {
		if n := strings.ToLower(z.Sensor); n == "gpu-therm" || n == "gpu-thermal" {
			g.TempC = z.Celsius
		}
	}
	// The GPU shares the system memory; report it as the GPU's.
	if total, avail, ok := meminfo(filepath.Join(j.sys, "../proc/meminfo")); ok {
		g.MemTotal, g.MemUsed = total, total-avail
	}
	return []protocol.GPU{g}, nil
}

// meminfo reads MemTotal and MemAvailable in bytes.
func meminfo(path string) (total, avail int64, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		if b, err = os.ReadFile("/proc/meminfo"); err != nil {
			return 0, 0, false
		}
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	return total, avail, total > 0
}

// ParseTegrastats reads the GPU from one tegrastats line (the tool's
// output, kept for recorded fixtures and for robots where sysfs is not
// readable): GR3D_FREQ load, GPU@ temperature, RAM used/total, and the GPU
// power rail (VDD_GPU_SOC, POM_5V_GPU or VDD_SYS_GPU, mW current/average).
func ParseTegrastats(line string) (protocol.GPU, error) {
	g := protocol.GPU{Index: 0, Name: "Jetson GPU"}
	f := strings.Fields(line)
	found := false
	for i := 0; i < len(f); i++ {
		w := f[i]
		switch {
		case w == "RAM" && i+1 < len(f):
			used, total, ok := strings.Cut(strings.TrimSuffix(f[i+1], "MB"), "/")
			if ok {
				g.MemUsed, g.MemTotal = int64(num(used))<<20, int64(num(total))<<20
			}
		case w == "GR3D_FREQ" && i+1 < len(f):
			pct, _, _ := strings.Cut(f[i+1], "%")
			g.UtilPercent = clamp(num(pct))
			found = true
		case strings.HasPrefix(w, "GPU@") && strings.HasSuffix(w, "C"):
			g.TempC = num(strings.TrimSuffix(strings.TrimPrefix(w, "GPU@"), "C"))
		case (w == "VDD_GPU_SOC" || w == "POM_5V_GPU" || w == "VDD_SYS_GPU" || w == "VDD_GPU") && i+1 < len(f):
			cur, _, _ := strings.Cut(strings.TrimSuffix(f[i+1], "mW"), "/")
			g.PowerW = num(strings.TrimSuffix(cur, "mW")) / 1000
		}
	}
	if !found {
		return g, fmt.Errorf("%w: tegrastats line has no GR3D_FREQ: %q", ErrParse, line)
	}
	if g.TempC <= -60 { // GPU@-256C: sensor off (Orin when the GPU is power-gated)
		g.TempC = 0
	}
	return g, nil
}
