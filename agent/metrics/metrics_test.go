package metrics_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/robotfleet/fleetlink/agent/metrics"
	"github.com/robotfleet/fleetlink/protocol"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/stretchr/testify/require"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

func TestParseNvidiaSMI(t *testing.T) {
	tests := []struct {
		file string
		want []protocol.GPU
	}{
		{"nvidia-smi-2gpu.csv", []protocol.GPU{
			{Index: 0, Name: "NVIDIA GeForce RTX 3090", UtilPercent: 37, MemUsed: 1536 << 20, MemTotal: 24576 << 20, TempC: 52, PowerW: 118.45},
			{Index: 1, Name: "NVIDIA A100-SXM4-40GB", UtilPercent: 0, MemUsed: 4 << 20, MemTotal: 40960 << 20, TempC: 31, PowerW: 56.12},
		}},
		{"nvidia-smi-na.csv", []protocol.GPU{
			{Index: 0, Name: "NVIDIA Jetson-class [N/A]", UtilPercent: 0, MemUsed: 0, MemTotal: 7620 << 20, TempC: 44, PowerW: 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := metrics.ParseNvidiaSMI(fixture(t, tc.file))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := metrics.ParseNvidiaSMI([]byte("0, x, 1\n"))
	require.ErrorIs(t, err, metrics.ErrParse)
	got, err := metrics.ParseNvidiaSMI(nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestNvidiaCollectorRunsTheTool(t *testing.T) {
	bin, err := filepath.Abs("testdata/fake-nvidia-smi.sh")
	require.NoError(t, err)
	n, err := metrics.NewNvidia(bin)
	require.NoError(t, err)
	gpus, err := n.GPUs(context.Background())
	require.NoError(t, err)
	require.Len(t, gpus, 2)
	require.Equal(t, "NVIDIA GeForce RTX 3090", gpus[0].Name)
	_, err = metrics.NewNvidia("/nonexistent/nvidia-smi")
	require.ErrorIs(t, err, metrics.ErrNoGPU)
}

func TestParseTegrastats(t *testing.T) {
	tests := []struct {
		file string
		want protocol.GPU
	}{
		{"tegrastats-nano.txt", protocol.GPU{Name: "Jetson GPU", UtilPercent: 46, MemUsed: 1619 << 20, MemTotal: 3956 << 20, TempC: 32.5, PowerW: 1.203}},
		{"tegrastats-orin.txt", protocol.GPU{Name: "Jetson GPU", UtilPercent: 0, MemUsed: 2448 << 20, MemTotal: 30536 << 20, TempC: 0, PowerW: 2.385}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := metrics.ParseTegrastats(string(fixture(t, tc.file)))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	_, err := metrics.ParseTegrastats("RAM 1/2MB")
	require.ErrorIs(t, err, metrics.ErrParse)
}

func TestJetsonSysfs(t *testing.T) {
	j, err := metrics.NewJetson("testdata/jetson-nano/sys")
	require.NoError(t, err)
	gpus, err := j.GPUs(context.Background())
	require.NoError(t, err)
	require.Equal(t, []protocol.GPU{{Index: 0, Name: "NVIDIA Jetson Nano Developer Kit", UtilPercent: 53.7,
		MemTotal: 4051032 << 10, MemUsed: (4051032 - 2365476) << 10, TempC: 32.5}}, gpus)
	zones := metrics.ThermalZones("testdata/jetson-nano/sys")
	require.Len(t, zones, 6)
	require.Equal(t, protocol.Temperature{Sensor: "CPU-therm", Celsius: 34}, zones[1])
	_, err = metrics.NewJetson(t.TempDir())
	require.ErrorIs(t, err, metrics.ErrNoGPU)
}

// A sample on this machine has every field of the spec and validates; with
// no GPU hardware, gpus is an empty list (not null).
func TestCollectHasEverySpecField(t *testing.T) {
	ctx := context.Background()
	c := metrics.New(ctx, metrics.Options{GPU: "auto", NvidiaSMI: "/nonexistent/nvidia-smi", SysRoot: t.TempDir(),
		Spool: func() (int64, int64, int64) { return 3, 300, 1 }, Logger: slog.New(slog.DiscardHandler)})
	require.Empty(t, c.GPUCollectors())
	m := c.Collect(ctx)
	ev := protocol.NewEvent("r-1", *m)
	ev.Seq = 1
	b, err := protocol.Encode(ev)
	require.NoError(t, err)
	var tree struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	require.NoError(t, json.Unmarshal(b, &tree))
	for _, k := range []string{"cpu", "memory", "swap", "disks", "net", "temperatures", "gpus", "uptime_s", "agent"} {
		require.Contains(t, tree.Data, k)
	}
	require.JSONEq(t, `[]`, string(tree.Data["gpus"]))
	require.NotEmpty(t, m.CPU.PerCore)
	require.NotEmpty(t, m.Disks)
	require.Positive(t, m.Memory.Total)
	require.Positive(t, m.Agent.RSSBytes)
	require.EqualValues(t, 3, m.Agent.SpoolDepth)
	require.Positive(t, m.UptimeS)
	// A second sample computes rates from deltas.
	m2 := c.Collect(ctx)
	require.GreaterOrEqual(t, m2.CPU.Percent, 0.0)
	require.LessOrEqual(t, m2.CPU.Percent, 100.0)
}

func TestConfiguredDisks(t *testing.T) {
	c := metrics.New(context.Background(), metrics.Options{Disks: []string{"/"}, GPU: "none", Logger: slog.New(slog.DiscardHandler)})
	m := c.Collect(context.Background())
	require.Len(t, m.Disks, 1)
	require.Equal(t, "/", m.Disks[0].Mount)
}

func TestRealMounts(t *testing.T) {
	got := metrics.RealMounts([]disk.PartitionStat{
		{Device: "/dev/sda1", Mountpoint: "/", Fstype: "ext4"},
		{Device: "/dev/sda1", Mountpoint: "/var/lib/docker/x", Fstype: "ext4"}, // bind mount of the same disk
		{Device: "/dev/nvme0n1p2", Mountpoint: "/data", Fstype: "xfs"},
		{Device: "/dev/loop3", Mountpoint: "/snap/core/1", Fstype: "squashfs"},
		{Device: "tmpfs", Mountpoint: "/run", Fstype: "tmpfs"},
		{Device: "overlay", Mountpoint: "/", Fstype: "overlay"},
	})
	require.Equal(t, []string{"/", "/data"}, got)
	require.Equal(t, []string{"/"}, metrics.RealMounts(nil))
}
