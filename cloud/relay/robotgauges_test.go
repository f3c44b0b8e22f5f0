package relay_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/protocol"
)

// getWith GETs url with a bearer token ("" = none).
func getWith(t testing.TB, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return resp.StatusCode, b.String()
}

// TestMetricsHistoryEndpoint: the relay keeps each robot's metrics history
// from its ingest and serves it per robot and fleet-wide, only to tokens
// whose robots claim covers the robot.
func TestMetricsHistoryEndpoint(t *testing.T) {
	cfg := testConfig()
	cfg.Auth.Secret = secret
	r := startRelay(t, cfg)
	base := "http://" + r.Addr()
	for _, id := range []string{"r-1", "r-2"} {
		rb := newRobot(t, brokerURL(r, cfg), id)
		rb.send("", status("online"))
		rb.send("", metrics())
	}
	r1 := mint(t, auth.RoleViewer, []string{"r-1"}, time.Hour)

	var h struct {
		Robot  string                `json:"robot"`
		StepS  float64               `json:"step_s"`
		T      []int64               `json:"t"`
		Series map[string][]*float64 `json:"series"`
	}
	require.Eventually(t, func() bool {
		code, body := getWith(t, base+"/api/v1/robots/r-1/metrics", r1)
		if code != http.StatusOK {
			return false
		}
		require.NoError(t, json.Unmarshal([]byte(body), &h), body)
		return len(h.T) == 1
	}, wait, 50*time.Millisecond)
	require.Equal(t, "r-1", h.Robot)
	require.Equal(t, 5.0, h.StepS)
	require.InDelta(t, 23.5, *h.Series["cpu"][0], 1e-3)
	require.InDelta(t, 12, *h.Series["gpu0_util"][0], 1e-3)
	require.InDelta(t, 48.5, *h.Series["temp:cpu-thermal"][0], 1e-3)

	// The attack: a token scoped to r-1 asks for r-2's history.
	code, body := getWith(t, base+"/api/v1/robots/r-2/metrics", r1)
	require.Equal(t, http.StatusForbidden, code, body)
	require.NotContains(t, body, "cpu")
	code, _ = getWith(t, base+"/api/v1/robots/r-1/metrics", "")
	require.Equal(t, http.StatusUnauthorized, code, "no token")
	forged, err := auth.Mint([]byte("another-secret-0123456789"), auth.MintOptions{Role: auth.RoleAdmin, Robots: []string{"*"}, TTL: time.Hour})
	require.NoError(t, err)
	code, _ = getWith(t, base+"/api/v1/robots/r-1/metrics", forged)
	require.Equal(t, http.StatusUnauthorized, code, "a token signed with another key")
	all := mint(t, auth.RoleViewer, []string{"*"}, time.Hour)
	code, _ = getWith(t, base+"/api/v1/robots/r-3/metrics", all)
	require.Equal(t, http.StatusNotFound, code, "unknown robot")

	var fleet struct {
		Robots []struct {
			ID    string  `json:"id"`
			State string  `json:"state"`
			CPU   float64 `json:"cpu"`
			Temp  float64 `json:"temp"`
		} `json:"robots"`
	}
	code, body = getWith(t, base+"/api/v1/fleet/metrics", r1)
	require.Equal(t, http.StatusOK, code)
	require.NoError(t, json.Unmarshal([]byte(body), &fleet))
	require.Len(t, fleet.Robots, 1, "r-2 is not listed to an r-1 token: %s", body)
	require.Equal(t, "r-1", fleet.Robots[0].ID)
	require.Equal(t, "online", fleet.Robots[0].State)
	require.InDelta(t, 48.5, fleet.Robots[0].Temp, 1e-9)
	require.Eventually(t, func() bool {
		_, body = getWith(t, base+"/api/v1/fleet/metrics", all)
		require.NoError(t, json.Unmarshal([]byte(body), &fleet))
		return len(fleet.Robots) == 2
	}, wait, 50*time.Millisecond)
	code, _ = getWith(t, base+"/api/v1/fleet/metrics", "")
	require.Equal(t, http.StatusUnauthorized, code)

	// With auth on, /metrics needs an admin token for every robot (issue 9 item 8).
	_, body = getWith(t, base+"/metrics", mint(t, auth.RoleAdmin, []string{"*"}, time.Hour))
	require.NotContains(t, body, "fleet_robot_", "per-robot gauges are off by default")
	require.Contains(t, body, "fleet_relay_history_points_dropped_total 0")
	require.Contains(t, body, "fleet_relay_history_late_total 0", "in-order samples polled again and again are never late")
}

// TestRobotGauges: with prometheus.robot_gauges on, /metrics carries one
// set of fleet_robot_* gauges per robot; every metric the Grafana dashboard
// and the Prometheus rules in configs/ use is one the relay exports.
func TestRobotGauges(t *testing.T) {
	cfg := testConfig()
	cfg.Prometheus.RobotGauges = true
	r := startRelay(t, cfg)
	base := "http://" + r.Addr()
	rb := newRobot(t, brokerURL(r, cfg), "r-1")
	rb.send("", status("online"))
	rb.send("", metrics())
	rb.send("", alert("cpu_temperature_high", "firing"))
	rb.send("", alert("disk_full", "firing"))
	rb.send("", alert("disk_full", "resolved"))
	rb.send("s-1", protocol.SessionStarted{Pipeline: "quantize-int8", Model: "m.onnx"})
	rb.send("s-1", sessionState(protocol.StatusRunning))
	rb.send("s-0", sessionState(protocol.StatusCompleted))
	off := newRobot(t, brokerURL(r, cfg), "r-2")
	off.send("", status("offline"))

	want := []string{
		`fleet_robot_online{robot="r-1"} 1`, `fleet_robot_online{robot="r-2"} 0`,
		`fleet_robot_cpu_percent{robot="r-1"} 23.5`, `fleet_robot_memory_percent{robot="r-1"} 37.5`,
		`fleet_robot_temperature_celsius{robot="r-1"} 48.5`, `fleet_robot_gpu_util_percent{gpu="0",robot="r-1"} 12`,
		`fleet_robot_gpu_memory_percent{gpu="0",robot="r-1"} 6.25`, `fleet_robot_gpu_temperature_celsius{gpu="0",robot="r-1"} 45.2`,
		`fleet_robot_spool_depth{robot="r-1"} 0`, `fleet_robot_alerts_firing{robot="r-1"} 1`,
		`fleet_robot_sessions_running{robot="r-1"} 1`, `fleet_robot_last_metrics_timestamp_seconds{robot="r-1"}`,
	}
	var body string
	require.Eventually(t, func() bool {
		_, body = httpGet(t, base+"/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	}, wait, 50*time.Millisecond, "want %q in\n%s", want, func() string { return grepLines(body, "fleet_robot_") })
	require.NotContains(t, body, `fleet_robot_cpu_percent{robot="r-2"}`, "no metrics, no metric gauges")

	exported := map[string]bool{}
	for _, line := range splitLines(body) {
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		exported[name] = true
	}
	used := configMetricNames(t)
	require.NotEmpty(t, used)
	for _, name := range used {
		require.True(t, exported[name], "configs/ use %s, which the relay does not export", name)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range splitLines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var metricName = regexp.MustCompile(`\bfleet_(?:relay|robot)_[a-z0-9_]+`)

// configMetricNames returns every metric named by an expression of the
// Grafana dashboards and Prometheus rules in configs/, after checking that
// they parse and are complete.
func configMetricNames(t *testing.T) []string {
	t.Helper()
	names := map[string]bool{}
	take := func(where, expr string) {
		require.NotEmpty(t, expr, where)
		require.Equal(t, strings.Count(expr, "("), strings.Count(expr, ")"), "%s: unbalanced parentheses in %q", where, expr)
		found := metricName.FindAllString(expr, -1)
		require.NotEmpty(t, found, "%s: %q names no relay metric", where, expr)
		for _, n := range found {
			names[n] = true
		}
	}

	dashboards, err := filepath.Glob("../../configs/grafana/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, dashboards)
	for _, f := range dashboards {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var d struct {
			Title  string `json:"title"`
			UID    string `json:"uid"`
			Panels []struct {
				Type    string `json:"type"`
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		require.NoError(t, json.Unmarshal(b, &d), f)
		require.NotEmpty(t, d.Title, f)
		require.NotEmpty(t, d.UID, f)
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			require.NotEmpty(t, p.Targets, "%s: panel %q has no query", f, p.Title)
			for _, tg := range p.Targets {
				take(f+": "+p.Title, tg.Expr)
			}
		}
	}

	rules, err := filepath.Glob("../../configs/prometheus/*.yml")
	require.NoError(t, err)
	require.NotEmpty(t, rules)
	for _, f := range rules {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var rf struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		require.NoError(t, dec.Decode(&rf), f)
		require.NotEmpty(t, rf.Groups, f)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				where := f + ": " + r.Alert
				require.NotEmpty(t, r.Alert, f)
				_, err := time.ParseDuration(r.For)
				require.NoError(t, err, "%s: for", where)
				require.Contains(t, []string{"info", "warning", "critical"}, r.Labels["severity"], where)
				require.NotEmpty(t, r.Annotations["summary"], where)
				take(where, r.Expr)
			}
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestRobotGaugesBounded: the per-robot gauges and the history follow the
// hub's robots, so hub.max_robots bounds them.
func TestRobotGaugesBounded(t *testing.T) {
	cfg := testConfig()
	cfg.Prometheus.RobotGauges = true
	cfg.Hub.MaxRobots = 2
	r := startRelay(t, cfg)
	for _, id := range []string{"r-1", "r-2", "r-3"} {
		rb := newRobot(t, brokerURL(r, cfg), id)
		rb.send("", status("online"))
		rb.send("", metrics())
	}
	base := "http://" + r.Addr()
	var body string
	require.Eventually(t, func() bool {
		_, body = httpGet(t, base+"/metrics")
		return strings.Contains(body, `fleet_robot_cpu_percent{robot="r-3"}`)
	}, wait, 50*time.Millisecond)
	require.Eventually(t, func() bool {
		_, body = httpGet(t, base+"/metrics")
		return strings.Count(body, "fleet_robot_cpu_percent{") == 2 && strings.Contains(body, "fleet_relay_history_robots 2")
	}, wait, 50*time.Millisecond, "at most hub.max_robots robots:\n%s", func() string { return grepLines(body, "fleet_robot_cpu_percent") })
}
