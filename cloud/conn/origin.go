package conn

import (
	"net/http"
	"net/url"
	"strings"
)

// SameOrigin accepts requests without an Origin header (not a browser) and
// browser origins whose host is the request's Host.
func SameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// AllowOrigins returns the Origin rule of both wire formats for an
// allowlist: "*" allows any origin, an empty list only the relay's own
// host, and requests without an Origin header (non-browsers) are always
// allowed.
func AllowOrigins(origins []string) func(r *http.Request) bool {
	if len(origins) == 0 {
		return SameOrigin
	}
	list := append([]string(nil), origins...)
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if origin == "" {
			return true
		}
		for _, a := range list {
			if a == "*" || strings.EqualFold(a, origin) {
				return true
			}
		}
		return false
	}
}
