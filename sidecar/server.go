package sidecar

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/routing"
	"github.com/blitzscale/router/sidecar/internal/upstream"
)

// Server is one sidecar: the router, its HTTP API and the upstream
// transport. Create it with New, feed it snapshots with Apply or Run.
type Server struct {
	rt        atomic.Pointer[runtime] // swapped whole by Reload
	router    *routing.Router
	breakers  *breaker.Set
	metrics   *metrics
	exchanges sync.Pool

	// peerLoad is the last sum of peers' in-flight per instance id.
	peerLoad atomic.Pointer[map[string]int64]
	// fleetSize is the sidecars this one sees publishing, itself included.
	fleetSize atomic.Int64

	ready    atomic.Bool // first snapshot applied
	stopping atomic.Bool // shutdown started: /readyz says 503
	now      func() time.Time
}

// New returns a sidecar for cfg. It does not listen until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.SidecarID == "" {
		host, err := os.Hostname()
		if err != nil {
			host = "sidecar"
		}
		cfg.SidecarID = host
	}
	picker, err := routing.NewPicker(cfg.Policy)
	if err != nil {
		return nil, fmt.Errorf("%w: policy: %v", ErrInvalidConfig, err)
	}
	router, err := routing.New(cfg.Routing, picker)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	s := &Server{router: router, now: time.Now}
	s.rt.Store(newRuntime(cfg, nil))
	bcfg := cfg.Breaker
	bcfg.OnStateChange = s.onBreakerChange
	if bcfg.Logger == nil {
		bcfg.Logger = cfg.Logger
	}
	if s.breakers, err = breaker.NewSet(bcfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	s.metrics = newMetrics(s)
	s.exchanges.New = func() any { return newExchange(&s.exchanges) }
	return s, nil
}

// newTransport tunes the upstream pool for many concurrent long streams to
// a handful of local instances. Instances are reached directly, never
// through HTTP_PROXY, and bodies pass through as the engine sent them (no
// transparent compression: the client asked for its own Accept-Encoding).
func newTransport(cfg Config) *upstream.Client {
	return &upstream.Client{
		DialTimeout:           cfg.ConnectTimeout,
		ResponseHeaderTimeout: cfg.FirstByteTimeout,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		// Held for a connection's life, so small: it holds the status line,
		// header lines and chunk-size lines (long header lines are read in
		// parts); body bytes go straight into the 4 KB copy buffer.
		ReadBufferSize: 1 << 10,
	}
}

// Router exposes the routing state (for tests and the load publisher).
func (s *Server) Router() *routing.Router { return s.router }

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return *s.conf() }

// conf is the configuration in force; Reload swaps it whole.
func (s *Server) conf() *Config { return &s.rt.Load().cfg }

// Ready reports whether discovery has completed its first sync.
func (s *Server) Ready() bool { return s.ready.Load() }

// Apply makes snap the routing view. The first call marks the sidecar ready.
func (s *Server) Apply(snap discovery.Snapshot) {
	s.breakers.Sync(snap.Instances)
	t := s.router.Update(snap)
	s.refreshPeers()
	s.metrics.observeSync(snap)
	if !s.ready.Swap(true) {
		s.conf().Logger.Info("discovery synced", "source", snap.Source, "instances", len(snap.Instances))
	} else {
		s.conf().Logger.Debug("routing table updated", "table", t.String())
	}
}

// Follow applies every snapshot src sends until ctx is done or src closes.
func (s *Server) Follow(ctx context.Context, src discovery.Source) {
	for snap := range src.Watch(ctx) {
		s.Apply(snap)
	}
}

// Run serves on ln and follows src until ctx is done, then shuts down
// gracefully: it stops accepting, reports not ready, lets open requests and
// streams finish for up to ShutdownTimeout, then closes what is left. It
// returns nil after a clean shutdown.
func (s *Server) Run(ctx context.Context, ln net.Listener, src discovery.Source) error {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.conf().ReadHeaderTimeout,
		IdleTimeout:       s.conf().IdleTimeout,
		MaxHeaderBytes:    s.conf().MaxHeaderBytes,
		ErrorLog:          nil,
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	var wg sync.WaitGroup
	if src != nil {
		wg.Go(func() { s.Follow(followCtx, src) })
	}
	wg.Go(func() { s.breakers.Run(followCtx) })
	wg.Go(func() { s.scrapeEngines(followCtx) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	s.conf().Logger.Info("sidecar listening", "addr", ln.Addr().String(), "policy", s.conf().Policy, "sidecar_id", s.conf().SidecarID)

	var err error
	select {
	case err = <-serveErr:
		err = fmt.Errorf("sidecar: serve: %w", err)
	case <-ctx.Done():
		s.stopping.Store(true)
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.conf().ShutdownTimeout)
		if serr := srv.Shutdown(shutdownCtx); serr != nil {
			s.conf().Logger.Warn("shutdown timeout: closing open streams", "timeout", s.conf().ShutdownTimeout)
			_ = srv.Close()
		}
		cancel()
		if e := <-serveErr; e != nil && !errors.Is(e, http.ErrServerClosed) {
			err = fmt.Errorf("sidecar: serve: %w", e)
		}
	}
	stopFollow()
	wg.Wait()
	s.rt.Load().transport.CloseIdleConnections()
	return err
}

// ServeHTTP dispatches the sidecar's routes. A switch on the path costs less
// than a pattern mux and lets every miss answer in OpenAI's error shape.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if len(r.Header) > s.conf().MaxHeaderCount {
		writeError(w, apiError{status: http.StatusRequestHeaderFieldsTooLarge, message: "too many request header fields", typ: typeInvalidRequest, code: "request_header_fields_too_large"})
		return
	}
	if s.conf().AuthToken != "" && (strings.HasPrefix(path, "/v1/") || path == "/state") && !s.authorized(r) {
		writeError(w, apiError{status: http.StatusUnauthorized, message: "missing or wrong bearer token", typ: typeAuth, code: "invalid_api_key"})
		return
	}
	if strings.HasPrefix(path, "/v1/") {
		switch {
		case r.Method == http.MethodPost:
			s.proxy(w, r)
		case path == "/v1/models" && isRead(r.Method):
			s.serveModels(w)
		case strings.HasPrefix(path, "/v1/models/") && isRead(r.Method):
			s.serveModel(w, strings.TrimPrefix(path, "/v1/models/"))
		default:
			writeError(w, apiError{status: http.StatusNotFound, message: "no route for " + r.Method + " " + path, typ: typeInvalidRequest, code: codeNotFound})
		}
		return
	}
	if !isRead(r.Method) {
		writeError(w, apiError{status: http.StatusMethodNotAllowed, message: "method " + r.Method + " not allowed on " + path, typ: typeInvalidRequest, code: codeMethodNotAllowed})
		return
	}
	switch path {
	case "/healthz":
		writeText(w, http.StatusOK, "ok\n")
	case "/readyz":
		s.serveReady(w)
	case "/metrics":
		s.metrics.handler.ServeHTTP(w, r)
	case "/state":
		s.serveState(w)
	default:
		writeError(w, apiError{status: http.StatusNotFound, message: "no route for " + r.Method + " " + path, typ: typeInvalidRequest, code: codeNotFound})
	}
}

// authorized compares the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	const prefix = "Bearer "
	got := r.Header.Get("Authorization")
	if len(got) < len(prefix) || !strings.EqualFold(got[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got[len(prefix):]), []byte(s.conf().AuthToken)) == 1
}

func isRead(m string) bool { return m == http.MethodGet || m == http.MethodHead }

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func (s *Server) serveReady(w http.ResponseWriter) {
	switch {
	case s.stopping.Load():
		writeText(w, http.StatusServiceUnavailable, "shutting down\n")
	case !s.ready.Load():
		writeText(w, http.StatusServiceUnavailable, "discovery has not completed its first sync\n")
	default:
		writeText(w, http.StatusOK, "ready\n")
	}
}
