package chaostest_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/static"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/sidecar"
)

// engine is a simulated inference engine on a real socket that can be
// killed (listener and every connection closed at once, as when its process
// dies) and restarted on the same address.
type engine struct {
	id   string
	sim  *llmsim.Sim
	addr string

	mu   sync.Mutex
	srv  *http.Server
	done chan struct{} // closed when the current Serve returned
}

// startEngine serves a new simulator until the test ends.
func startEngine(t testing.TB, id string, cfg llmsim.Config) *engine {
	t.Helper()
	cfg.ID = id
	if cfg.Models == nil {
		cfg.Models = []string{model}
	}
	if cfg.TTFT == 0 {
		cfg.TTFT = 5 * time.Millisecond
	}
	if cfg.ITL == 0 {
		cfg.ITL = time.Millisecond
	}
	sim, err := llmsim.New(cfg)
	if err != nil {
		t.Fatalf("llmsim.New: %v", err)
	}
	e := &engine{id: id, sim: sim, addr: "127.0.0.1:0"}
	if err := e.start(); err != nil {
		t.Fatalf("start engine %s: %v", id, err)
	}
	t.Cleanup(e.kill)
	return e
}

// start listens on e.addr (its old port after a kill) and serves.
func (e *engine) start() error {
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: e.sim, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	e.mu.Lock()
	e.addr, e.srv, e.done = ln.Addr().String(), srv, done
	e.mu.Unlock()
	return nil
}

// kill closes the listener and every connection at once: new connections
// are refused and requests in flight see their connection reset. Handlers
// still running end as their contexts are cancelled.
func (e *engine) kill() {
	e.mu.Lock()
	srv, done := e.srv, e.done
	e.srv = nil
	e.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-done
}

func (e *engine) instance() discovery.Instance {
	return discovery.Instance{ID: e.id, Address: e.addr, Models: []string{model}}
}

// staticSource writes instances to a static registry file in a temp dir and
// returns a source polling it.
func staticSource(t testing.TB, logger *slog.Logger, engines ...*engine) *static.Source {
	t.Helper()
	var list []discovery.Instance
	for _, e := range engines {
		list = append(list, e.instance())
	}
	data, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "instances.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return &static.Source{Path: path, PollInterval: 50 * time.Millisecond, Logger: logger}
}

// chaosConfig is a sidecar configuration with a small breaker, so that
// trips and recoveries happen within a test's time. Tests change fields.
func chaosConfig(logger *slog.Logger) sidecar.Config {
	return sidecar.Config{
		SidecarID:         "chaos",
		ConnectTimeout:    500 * time.Millisecond,
		FirstByteTimeout:  5 * time.Second,
		StreamIdleTimeout: 5 * time.Second,
		ShutdownTimeout:   2 * time.Second,
		Breaker: breaker.Config{
			ConsecutiveFailures: 3,
			CoolDown:            time.Second,
			ProbeInterval:       100 * time.Millisecond,
			ProbeTimeout:        200 * time.Millisecond,
		},
		Logger: logger,
	}
}

// runningSidecar is a sidecar serving on a real socket, with a client.
type runningSidecar struct {
	s      *sidecar.Server
	url    string
	client *http.Client
	stop   func() // cancels Run and waits for it; idempotent
}

// startSidecar runs sidecar.New(cfg) on a loopback listener, following src,
// until the test ends (or stop), and waits until it is ready.
func startSidecar(t testing.TB, cfg sidecar.Config, src discovery.Source) *runningSidecar {
	t.Helper()
	s, err := sidecar.New(cfg)
	if err != nil {
		t.Fatalf("sidecar.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, src) }()
	transport := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
	rs := &runningSidecar{s: s, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: transport, Timeout: 30 * time.Second}}
	var once sync.Once
	rs.stop = func() {
		once.Do(func() {
			transport.CloseIdleConnections()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("sidecar Run: %v", err)
				}
			case <-time.After(waitFor):
				t.Errorf("sidecar Run did not return within %v of cancel", waitFor)
			}
			transport.CloseIdleConnections()
		})
	}
	t.Cleanup(rs.stop)
	eventually(t, "sidecar ready", func() bool { return rs.get(t, "/readyz").StatusCode == http.StatusOK })
	return rs
}

type reply struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	Err        error
}

// get fetches path from the sidecar.
func (rs *runningSidecar) get(t testing.TB, path string) reply {
	t.Helper()
	resp, err := rs.client.Get(rs.url + path)
	if err != nil {
		return reply{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{StatusCode: resp.StatusCode, Header: resp.Header, Body: body, Err: err}
}

// state returns the sidecar's /state.
func (rs *runningSidecar) state(t testing.TB) sidecar.State {
	t.Helper()
	r := rs.get(t, "/state")
	var st sidecar.State
	if r.Err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("GET /state: %d %v", r.StatusCode, r.Err)
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		t.Fatalf("decode /state: %v", err)
	}
	return st
}

// breakerOf returns the breaker state of instance id in /state.
func (rs *runningSidecar) breakerOf(t testing.TB, id string) string {
	t.Helper()
	for _, in := range rs.state(t).Instances {
		if in.ID == id {
			return in.Breaker
		}
	}
	return "absent"
}

// metric returns the value of one exposition line that starts with
// name{labels} (or name alone), or -1 when absent.
func (rs *runningSidecar) metric(t testing.TB, series string) float64 {
	t.Helper()
	r := rs.get(t, "/metrics")
	if r.Err != nil {
		t.Fatalf("GET /metrics: %v", r.Err)
	}
	for line := range strings.Lines(string(r.Body)) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return -1
}

// assertIdle waits until the sidecar has nothing in flight to any instance
// and nothing queued: no request leaked a routing slot.
func (rs *runningSidecar) assertIdle(t testing.TB) {
	t.Helper()
	eventually(t, "sidecar idle (in flight and queued 0)", func() bool {
		st := rs.state(t)
		for _, in := range st.Instances {
			if in.InFlight != 0 {
				return false
			}
		}
		for _, n := range st.Queued {
			if n != 0 {
				return false
			}
		}
		return true
	})
}
