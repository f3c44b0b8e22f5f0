// Package relay is fleet-relay: it wires the MQTT ingest (to an external
// broker or the embedded one), the hub, the command tracker and the
// WebSocket API behind one HTTP server with /healthz, /readyz, /metrics and
// /api/v1/*, and shuts it all down gracefully.
package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/broker"
	"github.com/robotfleet/fleetlink/cloud/command"
	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/cloud/conn"
	"github.com/robotfleet/fleetlink/cloud/dashboard"
	"github.com/robotfleet/fleetlink/cloud/history"
	"github.com/robotfleet/fleetlink/cloud/hub"
	"github.com/robotfleet/fleetlink/cloud/ingest"
	"github.com/robotfleet/fleetlink/cloud/metricshistory"
	"github.com/robotfleet/fleetlink/cloud/socketio"
	"github.com/robotfleet/fleetlink/cloud/wsapi"
	"github.com/robotfleet/fleetlink/internal/version"
	"github.com/robotfleet/fleetlink/protocol"
)

// Relay is one fleet-relay process.
type Relay struct {
	cfg     config.Config
	log     *slog.Logger
	started time.Time
	hub     *hub.Hub
	// relayStats fills system.status data.relay (runSystem).
	relayStats func() protocol.RelayStats
	broker     *broker.Broker // nil with an external broker
	ingest     *ingest.Client
	commands   *command.Tracker
	ws         *wsapi.Handler
	sio        *socketio.Server
	admission  *conn.Admission // nil: new connections are not paced
	mhist      *metricshistory.Store
	mhistAPI   *metricshistory.API
	reg        *prometheus.Registry
	ln         net.Listener
	srv        *http.Server
	edge       *httpEdge
	history    *historyRun // nil without nats.urls
}

// New validates cfg, starts the embedded broker when no broker URL is
// configured, and binds the HTTP listener. Run serves.
func New(cfg config.Config, log *slog.Logger) (*Relay, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	topics, _ := protocol.NewTopics(cfg.TopicPrefix)
	r := &Relay{cfg: cfg, log: log, started: time.Now()}

	authOpts := auth.Options{Secret: []byte(cfg.Auth.Secret), StaticTokens: cfg.Auth.StaticTokens, Leeway: cfg.Auth.Leeway}
	if cfg.Auth.Secret == "" {
		authOpts.Secret = nil
	}
	if cfg.Auth.PublicKeyFile != "" {
		pem, err := os.ReadFile(cfg.Auth.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: auth.public_key_file: %v", ErrConfig, err)
		}
		authOpts.PublicKeyPEM = pem
	}
	authn, err := auth.New(authOpts)
	if err != nil {
		return nil, fmt.Errorf("%w: auth: %w", ErrConfig, err)
	}
	if !authn.Enabled() {
		log.Warn("auth is off: every client is admin for every robot", "listen", cfg.Listen)
	}

	if len(cfg.NATS.URLs) > 0 {
		r.history = &historyRun{opts: history.Options{URLs: cfg.NATS.URLs, Username: cfg.NATS.Username,
			Password: cfg.NATS.Password, Prefix: cfg.TopicPrefix, Stream: cfg.NATS.Stream, MaxAge: cfg.NATS.MaxAge,
			MaxBytes: cfg.NATS.MaxBytes, Replicas: cfg.NATS.Replicas, Logger: log.With("component", "history")}}
	}
	var older hub.History
	if r.history != nil {
		older = historySince{r.history}
	}
	var ready func() bool = func() bool { return r.ingest != nil && r.ingest.Ready() }
	r.hub = hub.New(hub.Options{
		RingEvents: cfg.Hub.RingEvents, RingBytes: cfg.Hub.RingBytes, DedupIDs: cfg.Hub.DedupIDs,
		MaxRobots: cfg.Hub.MaxRobots, SessionsPerRobot: cfg.Hub.SessionsPerRobot, RobotTTL: cfg.Hub.RobotTTL,
		RobotBytes: cfg.Hub.RobotBytes, TotalBytes: cfg.Hub.TotalBytes, MaxTextBytes: cfg.Hub.MaxTextBytes,
		MaxRoomsPerClient: cfg.WS.MaxRooms, SnapshotRate: cfg.WS.SnapshotRatePerCore * int64(runtime.GOMAXPROCS(0)), Logger: log.With("component", "hub"), History: older,
	})
	r.relayStats = func() protocol.RelayStats {
		return protocol.RelayStats{Version: version.Version, Connections: int(r.conns().Connections), MQTTConnected: ready()}
	}

	mqttOpts := ingest.Options{
		Brokers: cfg.MQTT.BrokerList(), Username: cfg.MQTT.Username, Password: cfg.MQTT.Password, ClientID: cfg.MQTT.ClientID,
		Topics: topics, QueueMessages: cfg.MQTT.QueueMessages, QueueBytes: cfg.MQTT.QueueBytes,
		ReconnectMin: cfg.MQTT.ReconnectMin, ReconnectMax: cfg.MQTT.ReconnectMax, ConnectTimeout: cfg.MQTT.ConnectTimeout,
		Hub: r.hub, OnGap: r.hub.MarkGap, Logger: log.With("component", "ingest"),
	}
	if r.history != nil {
		mqttOpts.MetricsAndRepliesOnly = true // the stream is the live path of the rest (runWithHistory)
	}
	if mqttOpts.TLS, err = clientTLS(cfg.MQTT); err != nil {
		return nil, err
	}
	if !cfg.MQTT.External() {
		accounts, err := cfg.Embedded.Accounts()
		if err != nil {
			return nil, fmt.Errorf("%w: embedded_mqtt.password_file: %v", ErrConfig, err)
		}
		bo := broker.Options{Listen: cfg.Embedded.Listen, TLSListen: cfg.Embedded.TLSListen, WSListen: cfg.Embedded.WSListen,
			WSAllowedOrigins: cfg.Embedded.WSAllowedOrigins, Users: accounts, InsecureAnonymous: cfg.Embedded.InsecureAnonymous,
			Limits: cfg.Embedded.Limits, Topics: topics, Logger: log}
		if cfg.Embedded.TLSListen != "" {
			cert, err := tls.LoadX509KeyPair(cfg.Embedded.TLSCertFile, cfg.Embedded.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("%w: embedded_mqtt.tls_cert_file: %v", ErrConfig, err)
			}
			bo.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		if r.broker, err = broker.New(bo); err != nil {
			return nil, err
		}
		mqttOpts.Brokers = []string{r.broker.URL()}
		mqttOpts.Username, mqttOpts.Password = r.broker.Credentials()
		mqttOpts.TLS = nil
	}
	r.ingest, err = ingest.New(mqttOpts)
	if err != nil {
		r.closeBroker()
		return nil, fmt.Errorf("%w: mqtt: %w", ErrConfig, err)
	}
	r.commands, err = command.New(command.Options{Publisher: r.ingest, Topics: topics, RobotState: r.hub.RobotState,
		Timeout: cfg.Commands.Timeout, MaxPending: cfg.Commands.MaxPending, MaxPendingPerOwner: cfg.Commands.MaxPendingPerPrincipal,
		SessionRobots: r.hub.SessionRobots})
	if err != nil {
		r.closeBroker()
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	r.ingest.SetOnReply(func(ev *protocol.Event, raw []byte) { r.commands.Reply(ev, raw) })

	var lat prometheus.Histogram
	r.reg, lat = newMetrics(r, ready)
	if r.broker != nil {
		r.reg.MustRegister(r.broker.Collectors()...)
	}
	gate := r.hub.SnapshotGate()
	r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Name: "snapshot_waits_total",
		Help: "Snapshot parts that waited for a writer slot or for ws.snapshot_rate_per_core."},
		func() float64 { return float64(gate.Waits()) }))
	if h := r.history; h != nil {
		r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "history",
			Name: "replayed_events_total", Help: "Events replayed from the JetStream history at start."},
			func() float64 { return float64(h.events.Load()) }))
		r.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "fleet_relay", Subsystem: "history",
			Name: "live_events_total", Help: "Events ingested live from the JetStream history stream."},
			func() float64 { return float64(h.live.Load()) }))
		r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "fleet_relay", Subsystem: "history",
			Name: "stream_sequence", Help: "Stream sequence of the last history event ingested."},
			func() float64 { return float64(h.followed.Load()) }))
	}
	r.mhist = metricshistory.New(metricshistory.Options{Window: cfg.History.Window, Step: cfg.History.Step,
		RobotBytes: cfg.History.RobotBytes, TotalBytes: cfg.History.TotalBytes, MaxRobots: cfg.Hub.MaxRobots})
	r.mhistAPI = metricshistory.NewAPI(r.mhist, historyAuthorize(authn))
	registerHistoryMetrics(r.reg, r.mhist, cfg.Prometheus.RobotGauges)
	if cfg.Prometheus.RobotGauges {
		if err := watchFleet(r.hub, r.mhist); err != nil {
			r.closeBroker()
			return nil, fmt.Errorf("watch room fleet for robot gauges: %w", err)
		}
	}
	// One line for both wire formats: a storm is every dashboard, whatever
	// it speaks.
	r.admission = conn.NewAdmission(cfg.WS.AcceptRatePerCore*float64(runtime.GOMAXPROCS(0)), cfg.WS.AcceptWait)
	registerAdmissionMetrics(r.reg, r.admission.Stats())
	r.ws, err = wsapi.New(wsapi.Options{Hub: r.hub, Auth: authn, Commands: r.commands, AllowedOrigins: cfg.AllowedOrigins, Admission: r.admission,
		Heartbeat: cfg.WS.Heartbeat, ClientGrace: cfg.WS.ClientGrace, WriteTimeout: cfg.WS.WriteTimeout,
		QueueBytes: cfg.WS.QueueBytes, ReadLimit: cfg.WS.ReadLimit, OpsPerSecond: cfg.WS.OpsPerSecond, OpsBurst: cfg.WS.OpsBurst,
		Observe: lat.Observe, Logger: log.With("component", "ws")})
	if err != nil {
		r.closeBroker()
		return nil, err
	}
	// Socket.IO is a second wire format over the same hub, auth and limits.
	r.sio, err = socketio.New(socketio.Options{Hub: r.hub, Auth: authn, Commands: r.commands, Admission: r.admission,
		CheckOrigin: socketio.AllowOrigins(cfg.AllowedOrigins), PingInterval: cfg.WS.Heartbeat,
		PingTimeout: cfg.WS.ClientGrace, WriteTimeout: cfg.WS.WriteTimeout, QueueBytes: cfg.WS.QueueBytes,
		MaxPayload: int(cfg.WS.ReadLimit), OpsPerSecond: cfg.WS.OpsPerSecond, OpsBurst: cfg.WS.OpsBurst,
		MaxSessions: cfg.WS.SocketIOMaxSessions, MaxPending: cfg.WS.SocketIOMaxPending,
		MaxPendingPerAddr: cfg.WS.SocketIOMaxPendingPerAddr, ConnectTimeout: cfg.WS.SocketIOConnectTimeout,
		Observe: lat.Observe, Logger: log.With("component", "socketio")})
	if err != nil {
		r.closeBroker()
		return nil, err
	}
	registerSocketIOMetrics(r.reg, r.sio.Stats())

	r.edge = &httpEdge{cfg: cfg, authn: authn, log: log.With("component", "http")}
	r.srv = &http.Server{Handler: r.edge.handler(r.routes()), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	serverTimeouts(r.srv, cfg.HTTP)
	if cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			r.closeBroker()
			return nil, fmt.Errorf("%w: tls.cert_file: %v", ErrConfig, err)
		}
		r.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if r.ln, err = r.edge.listen(r.promHandler()); err != nil {
		r.closeBroker()
		return nil, err
	}
	registerHTTPMetrics(r.reg, r.edge.conns)
	return r, nil
}

func clientTLS(m config.MQTT) (*tls.Config, error) {
	if m.CAFile == "" && m.CertFile == "" && !m.InsecureSkipVerify {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: m.InsecureSkipVerify} //nolint:gosec // opt-in, for tests
	if m.CAFile != "" {
		pem, err := os.ReadFile(m.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: mqtt.ca_file: %v", ErrConfig, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: mqtt.ca_file: no PEM certificates in %q", ErrConfig, m.CAFile)
		}
	}
	if m.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(m.CertFile, m.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: mqtt.cert_file: %v", ErrConfig, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func (r *Relay) closeBroker() {
	if r.broker != nil {
		_ = r.broker.Close()
	}
}

// Addr returns the HTTP listener's address.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// BrokerURL returns the embedded broker's URL, or "" with an external broker.
func (r *Relay) BrokerURL() string {
	if r.broker == nil {
		return ""
	}
	return r.broker.URL()
}

// WSStats returns the /ws connection layer's counters (for tests).
func (r *Relay) WSStats() *conn.Stats { return r.ws.ConnStats() }

// IngestStats returns the MQTT ingest's counters (for tests).
func (r *Relay) IngestStats() *ingest.Stats { return r.ingest.Stats() }

// Hub returns the hub (for tests and adapters).
func (r *Relay) Hub() *hub.Hub { return r.hub }

// Ready reports what /readyz reports: MQTT subscribed and, with a JetStream
// history, the history replayed.
func (r *Relay) Ready() bool {
	return r.ingest.Ready() && (r.history == nil || r.history.replayed.Load())
}

// Run serves until ctx ends, then shuts down gracefully: WebSocket clients
// are closed with 1001, HTTP requests drained, MQTT disconnected, the
// embedded broker stopped. Cancellation is not an error.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	scheme := "http"
	if r.srv.TLSConfig != nil {
		scheme = "https"
	}
	wg.Add(4)
	startIngest := func() { go func() { defer wg.Done(); _ = r.ingest.Run(ctx) }() }
	if r.history != nil {
		wg.Add(1)
		go func() { defer wg.Done(); r.runWithHistory(ctx, startIngest) }()
	} else {
		startIngest()
	}
	go func() { defer wg.Done(); newHistoryFeed(r.hub, r.mhist).run(ctx) }()
	go func() { defer wg.Done(); r.runSystem(ctx) }()
	go func() { defer wg.Done(); _ = r.sio.Run(ctx) }()
	go func() {
		var err error
		if scheme == "https" {
			err = r.srv.ServeTLS(r.ln, "", "")
		} else {
			err = r.srv.Serve(r.ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	}()
	r.edge.serveMetrics(errc)
	r.log.Info("fleet-relay serving", "version", version.String(), "url", scheme+"://"+r.Addr(),
		"mqtt", r.ingest.Broker(), "mqtt_client_id", r.ingest.ClientID(), "embedded_broker", r.BrokerURL())
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	r.log.Info("fleet-relay shutting down")
	sctx, scancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer scancel()
	if err := r.ws.Shutdown(sctx); err != nil {
		r.log.Warn("websocket clients did not close in time", "err", err)
	}
	// Waiting long-polls are active requests: release them before the HTTP
	// server waits for its requests to finish.
	if err := r.sio.Shutdown(sctx); err != nil {
		r.log.Warn("socket.io clients did not close in time", "err", err)
	}
	if err := r.srv.Shutdown(sctx); err != nil {
		_ = r.srv.Close()
	}
	r.edge.shutdownMetrics(sctx)
	cancel()
	wg.Wait()
	r.hub.Close()
	r.commands.Close()
	r.closeBroker()
	return runErr
}

func (r *Relay) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", r.afterReplay(r.ws))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !r.ingest.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: MQTT not connected and subscribed\n"))
			return
		}
		if r.history != nil && !r.history.replayed.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: replaying the JetStream history\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", r.edge.metricsHandler(r.promHandler()))
	// Every /api/v1/* route is on this mux, behind one token check.
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/stats", r.handleStats)
	api.HandleFunc("GET /api/v1/robots", r.handleRobots)
	api.HandleFunc("GET /api/v1/schema", handleSchema)
	api.HandleFunc("GET /api/v1/robots/{id}/metrics", r.mhistAPI.History)
	api.HandleFunc("GET /api/v1/fleet/metrics", r.mhistAPI.Fleet)
	mux.Handle("/api/v1/", apiAuth(r.edge.authn, api))
	// Engine.IO uses GET, POST and OPTIONS (CORS preflight).
	mux.Handle("/socket.io/", r.afterReplay(r.sio))
	dash := dashboard.Handler()
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET /assets/", dash)
	return mux
}

// conns adds up the connection counters of both wire formats.
func (r *Relay) conns() conn.Counts {
	var c conn.Counts
	if r.ws != nil {
		c = c.Add(r.ws.ConnStats().Counts())
	}
	if r.sio != nil {
		c = c.Add(r.sio.ConnStats().Counts())
	}
	return c
}

func (r *Relay) handleStats(w http.ResponseWriter, req *http.Request) {
	if !principal(req).AllRobots() {
		http.Error(w, "forbidden: fleet-wide stats need a token for every robot", http.StatusForbidden)
		return
	}
	s, in := r.hub.Stats(), r.ingest.Stats()
	cc := r.conns()
	c := r.hub.Counts()
	writeJSON(w, map[string]any{
		"version":          version.Version,
		"uptime_s":         time.Since(r.started).Seconds(),
		"connections":      cc.Connections,
		"rooms":            c.Rooms,
		"subscriptions":    c.Subscriptions,
		"robots_known":     c.RobotsKnown,
		"robots_online":    c.RobotsOnline,
		"sessions_running": c.SessionsRunning,
		"mqtt_connected":   r.ingest.Connected(),
		"mqtt_ready":       r.ingest.Ready(),
		"messages": map[string]int64{
			"in": in.MessagesIn.Load(), "out": cc.MessagesOut, "dropped": cc.Dropped + in.Dropped.Load(),
			"invalid": in.Invalid.Load(), "duplicate": s.Duplicates.Load(), "ingest_dropped": in.Dropped.Load(),
			"client_dropped": cc.Dropped,
		},
		"slow_consumer_closes": cc.SlowCloses,
		"queue_bytes":          cc.QueueBytes,
		"commands_pending":     r.commands.Pending(),
		"socketio": map[string]int64{
			"sessions": r.sio.Stats().Sessions.Load(), "websockets": r.sio.Stats().WebSockets.Load(),
			"connects": r.sio.Stats().Connects.Load(), "connect_errors": r.sio.Stats().ConnectErrors.Load(),
			"heartbeat_timeouts": r.sio.Stats().HeartbeatTimeouts.Load(),
		},
	})
}

type schemaEntry struct {
	Type        string          `json:"type"`
	Description string          `json:"description"`
	Direction   string          `json:"direction"`
	Topic       string          `json:"topic,omitempty"`
	QoS         byte            `json:"qos"`
	Retained    bool            `json:"retained"`
	Schema      json.RawMessage `json:"schema"`
	Example     *protocol.Event `json:"example"`
}

func handleSchema(w http.ResponseWriter, _ *http.Request) {
	var out []schemaEntry
	for _, t := range protocol.Catalog() {
		out = append(out, schemaEntry{Type: t.Type, Description: t.Description, Direction: t.Direction, Topic: t.Topic(),
			QoS: t.QoS, Retained: t.Retained, Schema: t.Schema(), Example: t.Example()})
	}
	writeJSON(w, map[string]any{"version": protocol.Version, "types": out})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
