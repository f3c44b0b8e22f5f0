package dashboard_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/dashboard"
)

var (
	unsafeHTML  = regexp.MustCompile(`\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML\(|document\.write\(`)
	unsafeEval  = regexp.MustCompile(`\beval\(|new Function\(|setTimeout\(\s*["'` + "`" + `]`)
	unsafeStyle = regexp.MustCompile(`setAttribute\(\s*["']style["']`) // CSSOM (el.style.x = …) is allowed
)

func get(t *testing.T, h http.Handler, path string) *http.Response {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w.Result()
}

// TestPageIsCSPSafe: the page runs under a strict CSP (no inline script or
// style, no eval): every script and stylesheet is a file under /assets/,
// served with the CSP header, and the page's own code never builds HTML
// from strings or evaluates code.
func TestPageIsCSPSafe(t *testing.T) {
	h := dashboard.Handler()
	resp := get(t, h, "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	csp := resp.Header.Get("Content-Security-Policy")
	require.Contains(t, csp, "script-src 'self'")
	require.Contains(t, csp, "style-src 'self'")
	require.NotContains(t, csp, "unsafe-inline")
	require.NotContains(t, csp, "unsafe-eval")
	b, _ := io.ReadAll(resp.Body)
	page := string(b)

	require.NotRegexp(t, `<script(\s[^>]*)?>\s*[^<\s]`, page, "no inline script")
	require.NotContains(t, page, "<style", "no inline stylesheet")
	require.NotRegexp(t, `\sstyle=`, page, "no style attributes")
	require.NotRegexp(t, `\son[a-z]+=`, page, "no inline event handlers")

	refs := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(page, -1)
	require.GreaterOrEqual(t, len(refs), 5, "app, status, style and uPlot's script and stylesheet")
	for _, m := range refs {
		r := get(t, h, m[1])
		require.Equal(t, http.StatusOK, r.StatusCode, m[1])
		code, _ := io.ReadAll(r.Body)
		if strings.HasSuffix(m[1], ".js") && !strings.Contains(m[1], "/vendor/") {
			for _, bad := range []*regexp.Regexp{unsafeHTML, unsafeEval, unsafeStyle} {
				if loc := bad.FindIndex(code); loc != nil {
					t.Errorf("%s: %q is not CSP-safe (or builds HTML from strings)", m[1], code[loc[0]:loc[1]])
				}
			}
		}
	}
	lic := get(t, h, "/assets/vendor/uplot/LICENSE")
	require.Equal(t, http.StatusOK, lic.StatusCode, "uPlot is vendored with its licence")
}

// TestStatusOrderingJS runs the page's own unit tests with node (status
// ordering by data.epoch).
func TestStatusOrderingJS(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: run scripts/test-deps.sh (%v)", err)
	}
	out, err := exec.Command(node, "--test", "../../scripts/dashboard/").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "# fail 0")
}
