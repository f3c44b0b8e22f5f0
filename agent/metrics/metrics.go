// Package metrics samples the robot for robot.metrics with gopsutil v4:
// CPU use from /proc/stat deltas between samples (never a sleeping
// cpu.Percent), per core, load, memory, swap, disks, network rates,
// temperatures (hwmon and thermal zones), uptime, GPUs (nvidia-smi, Jetson
// sysfs) and the agent's own RSS and CPU. It reads only the agent's own
// process, never the whole process table.
package metrics

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robotfleet/fleetlink/protocol"
	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	"github.com/shirou/gopsutil/v4/net"
	"github.com/shirou/gopsutil/v4/process"
	"github.com/shirou/gopsutil/v4/sensors"
)

// GPUCollector reads the GPUs of one kind. Absent hardware returns ErrNoGPU
// from New* so the collector is never registered.
type GPUCollector interface {
	Name() string
	GPUs(ctx context.Context) ([]protocol.GPU, error)
}

// SpoolStats reports the outbox for data.agent.
type SpoolStats func() (depth, bytes, dropped int64)

// Options configures a Collector.
type Options struct {
	// Disks are the mount points to report; empty means every real
	// filesystem (device-backed, de-duplicated by device), else "/".
	Disks []string
	// GPU is auto, nvidia, jetson or none. Empty means auto.
	GPU string
	// NvidiaSMI is the nvidia-smi binary. Empty means "nvidia-smi".
	NvidiaSMI string
	// SysRoot is where sysfs is mounted. Empty means /sys.
	SysRoot string
	// Spool reports the outbox; nil reports zeros.
	Spool SpoolStats
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Collector takes samples. Collect is not safe for concurrent use: the
// metrics loop owns it.
type Collector struct {
	opts Options
	log  *slog.Logger
	self *process.Process
	gpus []GPUCollector

	mounts      []string
	mountsAt    time.Time
	prevAt      time.Time
	prevCores   []cpu.TimesStat
	prevRx      uint64
	prevTx      uint64
	prevSelfCPU float64

	warnMu sync.Mutex
	warned map[string]time.Time // per source, for rate-limited warnings
}

// New returns a collector and takes the baseline the first sample's rates
// are computed against.
func New(ctx context.Context, opts Options) *Collector {
	if opts.GPU == "" {
		opts.GPU = "auto"
	}
	if opts.NvidiaSMI == "" {
		opts.NvidiaSMI = "nvidia-smi"
	}
	if opts.SysRoot == "" {
		opts.SysRoot = "/sys"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Collector{opts: opts, log: opts.Logger.With("component", "metrics"), warned: map[string]time.Time{}}
	c.self, _ = process.NewProcessWithContext(ctx, int32(os.Getpid()))
	if opts.GPU == "auto" || opts.GPU == "nvidia" {
		if g, err := NewNvidia(opts.NvidiaSMI); err == nil {
			c.gpus = append(c.gpus, g)
		} else if opts.GPU == "nvidia" {
			c.log.Warn("nvidia GPU collector unavailable", "err", err)
		}
	}
	if opts.GPU == "auto" || opts.GPU == "jetson" {
		if g, err := NewJetson(opts.SysRoot); err == nil {
			c.gpus = append(c.gpus, g)
		} else if opts.GPU == "jetson" {
			c.log.Warn("jetson GPU collector unavailable", "err", err)
		}
	}
	c.prevAt = time.Now()
	c.prevCores, _ = cpu.TimesWithContext(ctx, true)
	c.prevRx, c.prevTx = netTotals(ctx)
	c.prevSelfCPU = c.selfCPU(ctx)
	return c
}

// GPUCollectors names the GPU collectors in use.
func (c *Collector) GPUCollectors() []string {
	var n []string
	for _, g := range c.gpus {
		n = append(n, g.Name())
	}
	return n
}

// warn logs one line per source at most every 10 minutes.
func (c *Collector) warn(source string, err error) {
	c.warnMu.Lock()
	last, seen := c.warned[source]
	ok := !seen || time.Since(last) > 10*time.Minute
	if ok {
		c.warned[source] = time.Now()
	}
	c.warnMu.Unlock()
	if ok {
		c.log.Warn("metric source failed", "source", source, "err", err)
	}
}

// Collect takes one sample. A failing source leaves its fields at zero
// (and is logged, rate-limited); the sample is still valid.
func (c *Collector) Collect(ctx context.Context) *protocol.RobotMetrics {
	now := time.Now()
	dt := now.Sub(c.prevAt).Seconds()
	m := &protocol.RobotMetrics{Disks: []protocol.Disk{}, Temperatures: []protocol.Temperature{}, GPUs: []protocol.GPU{}}

	if cores, err := cpu.TimesWithContext(ctx, true); err != nil {
		c.warn("cpu", err)
		m.CPU.PerCore = []float64{}
	} else {
		m.CPU.Percent, m.CPU.PerCore = cpuPercent(c.prevCores, cores)
		c.prevCores = cores
	}
	if l, err := load.AvgWithContext(ctx); err != nil {
		c.warn("load", err)
	} else {
		m.CPU.Load1, m.CPU.Load5, m.CPU.Load15 = l.Load1, l.Load5, l.Load15
	}
	if v, err := mem.VirtualMemoryWithContext(ctx); err != nil {
		c.warn("memory", err)
	} else {
		m.Memory = protocol.Memory{Total: int64(v.Total), Used: int64(min(v.Used, v.Total)), Available: int64(v.Available), Percent: clamp(v.UsedPercent)}
	}
	if s, err := mem.SwapMemoryWithContext(ctx); err != nil {
		c.warn("swap", err)
	} else {
		m.Swap = protocol.Swap{Total: int64(s.Total), Used: int64(s.Used), Percent: clamp(s.UsedPercent)}
	}
	for _, mp := range c.diskMounts(ctx, now) {
		u, err := disk.UsageWithContext(ctx, mp)
		if err != nil {
			c.warn("disk "+mp, err)
			continue
		}
		m.Disks = append(m.Disks, protocol.Disk{Mount: mp, Total: int64(u.Total), Used: int64(u.Used), Percent: clamp(u.UsedPercent)})
	}
	rx, tx := netTotals(ctx)
	if dt > 0 && rx >= c.prevRx && tx >= c.prevTx {
		m.Net = protocol.Net{RxBps: float64(rx-c.prevRx) / dt, TxBps: float64(tx-c.prevTx) / dt}
	}
	c.prevRx, c.prevTx = rx, tx
	m.Temperatures = c.temperatures(ctx)
	for _, g := range c.gpus {
		gs, err := g.GPUs(ctx)
		if err != nil {
			c.warn(g.Name(), err)
			continue
		}
		m.GPUs = append(m.GPUs, gs...)
	}
	if up, err := host.UptimeWithContext(ctx); err == nil {
		m.UptimeS = float64(up)
	}
	if c.self != nil {
		if mi, err := c.self.MemoryInfoWithContext(ctx); err == nil {
			m.Agent.RSSBytes = int64(mi.RSS)
		}
		cpuNow := c.selfCPU(ctx)
		if dt > 0 && cpuNow >= c.prevSelfCPU {
			m.Agent.CPUPercent = (cpuNow - c.prevSelfCPU) / dt * 100
		}
		c.prevSelfCPU = cpuNow
	}
	if c.opts.Spool != nil {
		m.Agent.SpoolDepth, m.Agent.SpoolBytes, m.Agent.SpoolDropped = c.opts.Spool()
	}
	c.prevAt = now
	return m
}

func clamp(p float64) float64 { return min(max(p, 0), 100) }

// cpuPercent returns whole-machine and per-core use from two /proc/stat
// snapshots.
func cpuPercent(prev, cur []cpu.TimesStat) (float64, []float64) {
	per := make([]float64, len(cur))
	var busyAll, totalAll float64
	for i, t := range cur {
		if i >= len(prev) {
			break
		}
		total := sum(t) - sum(prev[i])
		idle := (t.Idle + t.Iowait) - (prev[i].Idle + prev[i].Iowait)
		if total <= 0 {
			continue
		}
		per[i] = clamp((total - idle) / total * 100)
		busyAll += total - idle
		totalAll += total
	}
	if totalAll <= 0 {
		return 0, per
	}
	return clamp(busyAll / totalAll * 100), per
}

// sum is the total time of a TimesStat; guest time is already in user.
func sum(t cpu.TimesStat) float64 {
	return t.User + t.Nice + t.System + t.Idle + t.Iowait + t.Irq + t.Softirq + t.Steal
}

func netTotals(ctx context.Context) (rx, tx uint64) {
	cs, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		return 0, 0
	}
	for _, s := range cs {
		if s.Name == "lo" {
			continue
		}
		rx += s.BytesRecv
		tx += s.BytesSent
	}
	return rx, tx
}

func (c *Collector) selfCPU(ctx context.Context) float64 {
	if c.self == nil {
		return 0
	}
	t, err := c.self.TimesWithContext(ctx)
	if err != nil {
		return 0
	}
	return t.User + t.System
}

// diskMounts returns the configured mounts, or the real filesystems found
// at most once a minute (mounts rarely change; reading them is not free).
func (c *Collector) diskMounts(ctx context.Context, now time.Time) []string {
	if len(c.opts.Disks) > 0 {
		return c.opts.Disks
	}
	if c.mounts != nil && now.Sub(c.mountsAt) < time.Minute {
		return c.mounts
	}
	c.mountsAt = now
	ps, err := disk.PartitionsWithContext(ctx, false)
	if err != nil {
		c.warn("partitions", err)
	}
	c.mounts = realMounts(ps)
	return c.mounts
}

// realMounts keeps device-backed filesystems, one mount per device (the
// shortest path, so bind mounts do not repeat a disk), and "/" when none.
func realMounts(ps []disk.PartitionStat) []string {
	byDev := map[string]string{}
	for _, p := range ps {
		if !strings.HasPrefix(p.Device, "/dev/") || strings.HasPrefix(p.Device, "/dev/loop") {
			continue
		}
		switch p.Fstype {
		case "squashfs", "iso9660", "tmpfs", "devtmpfs", "overlay":
			continue
		}
		if cur, ok := byDev[p.Device]; !ok || len(p.Mountpoint) < len(cur) {
			byDev[p.Device] = p.Mountpoint
		}
	}
	out := make([]string, 0, len(byDev))
	for _, mp := range byDev {
		out = append(out, mp)
	}
	if len(out) == 0 {
		out = append(out, "/")
	}
	slices.Sort(out)
	return out
}

// temperatures reads hwmon (gopsutil) and the thermal zones (which
// gopsutil reads only when there is no hwmon; Jetson and Raspberry Pi
// report their CPU and GPU there).
func (c *Collector) temperatures(ctx context.Context) []protocol.Temperature {
	out := []protocol.Temperature{}
	seen := map[string]bool{}
	add := func(name string, celsius float64) {
		// Switched-off sensors report nonsense (Jetson: -256 °C).
		if celsius <= -60 || celsius >= 200 || name == "" || seen[name] {
			return
		}
		seen[name] = true
		out = append(out, protocol.Temperature{Sensor: name, Celsius: celsius})
	}
	ts, err := sensors.TemperaturesWithContext(ctx)
	if err != nil && len(ts) == 0 {
		c.warnOnce("hwmon", err)
	}
	for _, t := range ts {
		add(t.SensorKey, t.Temperature)
	}
	for _, z := range ThermalZones(c.opts.SysRoot) {
		add(z.Sensor, z.Celsius)
	}
	return out
}

// warnOnce is warn for sources that are simply absent on many machines
// (no hwmon in a VM): logged at debug level.
func (c *Collector) warnOnce(source string, err error) {
	c.warnMu.Lock()
	_, seen := c.warned[source]
	c.warned[source] = time.Now()
	c.warnMu.Unlock()
	if !seen {
		c.log.Debug("metric source unavailable", "source", source, "err", err)
	}
}

// ThermalZones reads <sys>/class/thermal/thermal_zone*/{type,temp}.
func ThermalZones(sysRoot string) []protocol.Temperature {
	dirs, _ := filepath.Glob(filepath.Join(sysRoot, "class/thermal/thermal_zone*"))
	var out []protocol.Temperature
	for _, d := range dirs {
		typ, err1 := os.ReadFile(filepath.Join(d, "type"))
		raw, err2 := os.ReadFile(filepath.Join(d, "temp"))
		if err1 != nil || err2 != nil {
			continue
		}
		milli, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
		if err != nil {
			continue
		}
		out = append(out, protocol.Temperature{Sensor: strings.TrimSpace(string(typ)), Celsius: milli / 1000})
	}
	return out
}
