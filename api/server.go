// Package api is a node's client-facing HTTP server: health, node
// information, metrics and the key registry's endpoints (docs/api.md).
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/volo-chat/volo/backupstore"
	"github.com/volo-chat/volo/keyregistry"
	"github.com/volo-chat/volo/wire"
)

// Limits of the HTTP server.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
)

// Names of the JSON bodies in package wire, kept for the callers of this
// package that used them from here (node, volo-node verify).
type (
	// NodeInfo is wire.NodeInfo, the body of GET /v1/node.
	NodeInfo = wire.NodeInfo
	// NonceResponse is wire.NonceResponse.
	NonceResponse = wire.NonceResponse
	// RegisterRequest is wire.RegisterRequest.
	RegisterRequest = wire.RegisterRequest
	// AppendLinkRequest is wire.AppendLinkRequest.
	AppendLinkRequest = wire.AppendLinkRequest
	// UserResponse is wire.UserResponse.
	UserResponse = wire.UserResponse
	// AnchorProof is wire.AnchorProof.
	AnchorProof = wire.AnchorProof
)

// Backend is what the server asks of the node.
type Backend interface {
	// Info describes the node.
	Info() NodeInfo
	// Health checks each component; a nil error means it is up.
	Health() map[string]error
}

// Server is the node's HTTP server.
type Server struct {
	cfg     Config
	proxies []netip.Prefix // cfg.TrustedProxies
	log     *slog.Logger
	backend Backend
	srv     *http.Server
	ln      net.Listener
	done    chan error

	keys     *keyregistry.Service
	relay    Relay
	backup   *backupstore.Service
	sessions *sessions

	// ctx lives until Stop: hijacked connections (WebSockets) end with it,
	// since http.Server.Shutdown does not close them.
	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup
	// drain ends the other requests when half the shutdown timeout has
	// passed: a request waiting on the network (a DHT lookup with peers
	// gone) gives up instead of holding the node's stop.
	drain       context.Context
	cancelDrain context.CancelFunc
	// inflight counts the requests being served, by route, for the error
	// of a shutdown that times out.
	inflight inflightCounter
	// fresh holds the connections that have not sent a request yet.
	fresh freshConns
	// stopped is set by the first Stop.
	stopped bool

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// Option configures what New mounts besides the node endpoints.
type Option func(*Server)

// New builds the server; Start listens. Its metrics are registered on reg.
func New(cfg Config, backend Backend, reg prometheus.Registerer, gatherer prometheus.Gatherer, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	proxies, _ := cfg.proxies() // Validate checked them
	ctx, cancel := context.WithCancel(context.Background())
	drain, cancelDrain := context.WithCancel(context.Background())
	s := &Server{
		drain:       drain,
		cancelDrain: cancelDrain,
		cfg:         cfg,
		proxies:     proxies,
		log:         log,
		backend:     backend,
		ctx:         ctx,
		cancel:      cancel,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "volo_api_requests_total",
			Help: "HTTP requests served, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "volo_api_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"route"}),
	}
	for _, o := range opts {
		o(s)
	}
	for _, c := range []prometheus.Collector{s.requests, s.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	mux := http.NewServeMux()
	s.route(mux, "/healthz", http.MethodGet, s.healthz)
	s.route(mux, "/v1/node", http.MethodGet, s.node)
	s.route(mux, "/metrics", http.MethodGet, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}).ServeHTTP)
	if s.keys != nil {
		s.mountRegistry(mux)
	}
	if s.backup != nil {
		s.mountBackup(mux)
	}
	if s.relay != nil {
		if s.keys == nil {
			return nil, errors.New("api: the WebSocket endpoint needs the key registry to authenticate devices")
		}
		var err error
		if s.sessions, err = newSessions(reg); err != nil {
			return nil, err
		}
		s.route(mux, "/v1/ws", http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
			s.conns.Add(1)
			defer s.conns.Done()
			s.ws(w, r)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, wire.CodeNotFound, fmt.Sprintf("no such endpoint: %s", r.URL.Path))
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	// Shutdown waits for requests in flight: long polls and WebSocket
	// sessions are told to end as soon as it begins, not when it times out.
	s.srv.RegisterOnShutdown(s.cancel)
	// It also waits, up to 5 s, for connections that never sent a request
	// (an HTTP client dials ahead and keeps the spare connection): those
	// are closed at once instead.
	s.srv.ConnState = s.fresh.track
	s.srv.RegisterOnShutdown(s.fresh.closeAll)
	return s, nil
}

// longPoll is the context of a request that waits for something to happen
// (a login ticket, a rendezvous message): it ends with the request or when
// the server shuts down, whichever comes first.
func (s *Server) longPoll(r *http.Request) context.Context {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.ctx, cancel)
	context.AfterFunc(ctx, func() { stop() }) // the request ended: forget it
	return ctx
}

// route serves path for one method, answers others with 405, and counts
// and times every request under the route's name.
func (s *Server) route(mux *http.ServeMux, path, method string, h http.HandlerFunc) {
	s.routes(mux, path, map[string]http.HandlerFunc{method: h})
}

// routes is route for a path served by several methods. path may hold
// ServeMux wildcards ("/v1/users/{user_id}"); it is the route's name.
func (s *Server) routes(mux *http.ServeMux, path string, hs map[string]http.HandlerFunc) {
	var allow []string
	for m := range hs {
		allow = append(allow, m)
	}
	sort.Strings(allow)
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.inflight.Add(path, 1)
		defer s.inflight.Add(path, -1)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		defer context.AfterFunc(s.drain, cancel)()
		r = r.WithContext(ctx)
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h, ok := hs[r.Method]
		if !ok && r.Method == http.MethodHead {
			h, ok = hs[http.MethodGet]
		}
		if ok {
			h(rec, r)
		} else {
			rec.Header().Set("Allow", strings.Join(allow, ", "))
			WriteError(rec, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed,
				fmt.Sprintf("%s %s: use %s", r.Method, path, strings.Join(allow, " or ")))
		}
		s.requests.WithLabelValues(path, strconv.Itoa(rec.code)).Inc()
		s.duration.WithLabelValues(path).Observe(time.Since(start).Seconds())
	})
}

// Start listens on cfg.Listen and serves in the background.
func (s *Server) Start(context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	s.done = make(chan error, 1)
	go func() { s.done <- s.srv.Serve(ln) }()
	s.log.Info("api listening", "url", s.URL())
	return nil
}

// Stop stops accepting requests and waits, up to the shutdown timeout, for
// those in flight.
func (s *Server) Stop() error {
	if s.ln == nil || s.stopped {
		return nil // not started, or stopped already
	}
	s.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.Std())
	defer cancel()
	drainTimer := time.AfterFunc(s.cfg.ShutdownTimeout.Std()/2, s.cancelDrain)
	defer drainTimer.Stop()
	err := s.srv.Shutdown(ctx)
	s.cancelDrain()
	s.cancel()
	s.conns.Wait()
	if serveErr := <-s.done; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	if err != nil {
		if busy := s.inflight.String(); busy != "" {
			return fmt.Errorf("api: shutdown: %w (requests still in flight: %s)", err, busy)
		}
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// freshConns tracks the connections in http.StateNew.
type freshConns struct {
	mu sync.Mutex
	m  map[net.Conn]struct{}
}

func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		if f.m == nil {
			f.m = map[net.Conn]struct{}{}
		}
		f.m[c] = struct{}{}
		return
	}
	delete(f.m, c)
}

// closeAll closes the connections that have not sent a request.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.m {
		c.Close()
	}
	clear(f.m)
}

// inflightCounter counts requests in flight by route.
type inflightCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *inflightCounter) Add(route string, d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	if c.n[route] += d; c.n[route] == 0 {
		delete(c.n, route)
	}
}

// String lists the routes with requests in flight ("" if none).
func (c *inflightCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for r, n := range c.n {
		out = append(out, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// Addr is the address the server listens on (with the real port when the
// configured port was 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the base URL of the server.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	checks := s.backend.Health()
	body := map[string]string{}
	var failed []error
	for name, err := range checks {
		body[name] = "ok"
		if err != nil {
			body[name] = err.Error()
			failed = append(failed, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(failed) > 0 {
		WriteError(w, http.StatusServiceUnavailable, wire.CodeUnhealthy, errors.Join(failed...).Error())
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": body})
}

func (s *Server) node(w http.ResponseWriter, _ *http.Request) {
	WriteJSON(w, http.StatusOK, s.backend.Info())
}

// WriteJSON writes v as a JSON body with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the JSON error body with the given status.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	WriteJSON(w, status, wire.ErrorResponse{Error: wire.ErrorDetail{Code: code, Message: message}})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

// Unwrap lets http.ResponseController and the WebSocket upgrade reach the
// connection underneath.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

// errorCode is one row of a service's error table: the status and code
// (docs/api.md) an error answers with.
type errorCode struct {
	err    error
	status int
	code   string
}

// errorStatus answers err with the first row of table it matches, else
// 500 internal.
func errorStatus(err error, table []errorCode) (int, string) {
	for _, m := range table {
		if errors.Is(err, m.err) {
			return m.status, m.code
		}
	}
	return http.StatusInternalServerError, wire.CodeInternal
}
