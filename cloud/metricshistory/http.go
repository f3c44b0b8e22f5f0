package metricshistory

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/robotfleet/fleetlink/protocol"
)

// Grant says which robots a request may see (auth.Principal).
type Grant interface {
	CanRobot(id string) bool
	AllRobots() bool
}

// Authorize returns the grant of a request, or an error when it carries no
// valid credentials (answered 401).
type Authorize func(r *http.Request) (Grant, error)

// API serves the store over HTTP:
//
//	GET /api/v1/robots/{id}/metrics[?since=UNIX_S]  one robot's history (charts)
//	GET /api/v1/fleet/metrics                       every granted robot's latest values (fleet table)
//
// Both check the request's grant themselves: a robot outside the token's
// robots claim is 403 and never listed.
type API struct {
	store     *Store
	authorize Authorize
}

// NewAPI returns the handlers; authorize nil means every request sees every
// robot (auth off).
func NewAPI(store *Store, authorize Authorize) *API {
	return &API{store: store, authorize: authorize}
}

func (a *API) grant(w http.ResponseWriter, r *http.Request) (Grant, bool) {
	if a.authorize == nil {
		return nil, true
	}
	g, err := a.authorize(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fleet-relay"`)
		httpError(w, http.StatusUnauthorized, "unauthorized", err.Error())
		return nil, false
	}
	return g, true
}

// History serves GET /api/v1/robots/{id}/metrics: series as columns (uPlot's
// layout), t in unix seconds, null where a series had no sample.
func (a *API) History(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidID(id) {
		httpError(w, http.StatusBadRequest, "bad_request", "robot id must match spec §1")
		return
	}
	g, ok := a.grant(w, r)
	if !ok {
		return
	}
	if g != nil && !g.CanRobot(id) {
		httpError(w, http.StatusForbidden, "forbidden", "the token's robots claim does not cover "+strconv.Quote(id))
		return
	}
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			httpError(w, http.StatusBadRequest, "bad_request", "since must be unix seconds, got "+strconv.Quote(v))
			return
		}
		since = n
	}
	h, found := a.store.History(id, since)
	if !found {
		httpError(w, http.StatusNotFound, "not_found", "no metrics of robot "+strconv.Quote(id))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(h.appendJSON(make([]byte, 0, 256+len(h.T)*(12+8*len(h.Names)))))
}

func (h *History) appendJSON(b []byte) []byte {
	b = append(b, `{"robot":`...)
	b = strconv.AppendQuote(b, h.Robot)
	b = append(b, `,"step_s":`...)
	b = strconv.AppendFloat(b, h.Step.Seconds(), 'f', -1, 64)
	b = append(b, `,"window_s":`...)
	b = strconv.AppendFloat(b, h.Window.Seconds(), 'f', -1, 64)
	b = append(b, `,"t":[`...)
	for i, t := range h.T {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, t, 10)
	}
	b = append(b, `],"series":{`...)
	for j, name := range h.Names {
		if j > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, name)
		b = append(b, ":["...)
		for i, v := range h.Series[j] {
			if i > 0 {
				b = append(b, ',')
			}
			if math.IsNaN(float64(v)) {
				b = append(b, "null"...)
			} else {
				b = strconv.AppendFloat(b, float64(v), 'f', -1, 32)
			}
		}
		b = append(b, ']')
	}
	return append(b, "}}\n"...)
}

// Fleet serves GET /api/v1/fleet/metrics: the latest values of every robot
// the request may see, with the store's step and window.
func (a *API) Fleet(w http.ResponseWriter, r *http.Request) {
	g, ok := a.grant(w, r)
	if !ok {
		return
	}
	var keep func(string) bool
	if g != nil && !g.AllRobots() {
		keep = g.CanRobot
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Vary", "Accept-Encoding")
	var out io.Writer = w
	// ~250 bytes a robot, polled every 2 s by each open fleet table: worth
	// compressing (its keys repeat), at the cheapest level.
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		zw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		defer zw.Close()
		out = zw
	}
	_ = json.NewEncoder(out).Encode(map[string]any{
		"step_s": a.store.o.Step.Seconds(), "window_s": a.store.o.Window.Seconds(), "robots": a.store.Latest(keep),
	})
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": code, "message": msg})
	_, _ = w.Write(append(b, '\n'))
}
