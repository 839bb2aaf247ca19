package breaker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
)

// engine is an httptest backend that answers /health with status and counts
// every request it receives.
type engine struct {
	srv            *httptest.Server
	status         atomic.Int32
	health, others atomic.Int64
}

func newEngine(t *testing.T, status int) *engine {
	t.Helper()
	e := &engine{}
	e.status.Store(int32(status))
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/health" {
			e.others.Add(1)
			w.WriteHeader(http.StatusNotFound)
			return
		}
		e.health.Add(1)
		w.WriteHeader(int(e.status.Load()))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *engine) addr() string { return strings.TrimPrefix(e.srv.URL, "http://") }

// runProber starts Run and stops it when the test ends, waiting for it to
// return so goleak sees no prober goroutine.
func runProber(t *testing.T, s *Set) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func probeConfig(rec *recorder) Config {
	return Config{
		ConsecutiveFailures: 1,
		CoolDown:            50 * time.Millisecond,
		ProbeInterval:       5 * time.Millisecond,
		ProbeTimeout:        time.Second,
		OnStateChange:       rec.hook,
	}
}

// A recovered engine is closed by a probe before any real request is risked,
// and every transition, the lazy open→half-open one included, is reported
// without anyone asking for the state.
func TestProbeClosesRecovered(t *testing.T) {
	eng := newEngine(t, http.StatusOK)
	rec := &recorder{}
	s, err := NewSet(probeConfig(rec))
	if err != nil {
		t.Fatal(err)
	}
	s.Sync([]discovery.Instance{{ID: "a", Address: eng.addr()}})
	feed(t, s, "a", F)
	runProber(t, s)

	want := []string{"a:closed->open", "a:open->half-open", "a:half-open->closed"}
	waitFor(t, "the prober to close the breaker", func() bool { return len(rec.list()) >= len(want) })
	if diff := cmp.Diff(want, rec.list()); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
	if n := eng.health.Load(); n != 1 {
		t.Errorf("health probes = %d, want 1 (the single half-open trial)", n)
	}
	if n := eng.others.Load(); n != 0 {
		t.Errorf("other requests = %d, want 0", n)
	}
}

// An engine still failing its health check stays out: each probe reopens the
// breaker for another cool-down and it never closes.
func TestProbeFailureKeepsOpen(t *testing.T) {
	tests := []struct {
		name   string
		status int
	}{
		{"500", http.StatusInternalServerError},
		{"503", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eng := newEngine(t, tt.status)
			rec := &recorder{}
			s, err := NewSet(probeConfig(rec))
			if err != nil {
				t.Fatal(err)
			}
			s.Sync([]discovery.Instance{{ID: "a", Address: eng.addr()}})
			feed(t, s, "a", F)
			runProber(t, s)

			waitFor(t, "two failed probes", func() bool { return eng.health.Load() >= 2 })
			got := rec.list()
			if slices.Contains(got, "a:half-open->closed") {
				t.Errorf("breaker closed on a failing probe: %v", got)
			}
			if !slices.Contains(got, "a:half-open->open") {
				t.Errorf("transitions %v lack half-open->open", got)
			}
			if st := s.State("a"); st == Closed {
				t.Errorf("State = %v, want open or half-open", st)
			}
		})
	}
}

// An unreachable engine (nothing listens) fails its probe like a 500.
func TestProbeUnreachable(t *testing.T) {
	eng := newEngine(t, http.StatusOK)
	addr := eng.addr()
	eng.srv.Close()
	rec := &recorder{}
	s, err := NewSet(probeConfig(rec))
	if err != nil {
		t.Fatal(err)
	}
	s.Sync([]discovery.Instance{{ID: "a", Address: addr}})
	feed(t, s, "a", F)
	runProber(t, s)
	waitFor(t, "a failed probe", func() bool { return slices.Contains(rec.list(), "a:half-open->open") })
}

// The prober leaves a half-open instance alone while a real request holds
// its trial.
func TestProbeSkipsBusyTrial(t *testing.T) {
	eng := newEngine(t, http.StatusOK)
	rec := &recorder{}
	s, err := NewSet(probeConfig(rec))
	if err != nil {
		t.Fatal(err)
	}
	s.Sync([]discovery.Instance{{ID: "a", Address: eng.addr()}})
	feed(t, s, "a", F)
	waitFor(t, "half-open", func() bool { return s.State("a") == HalfOpen })
	trial, err := s.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for range 5 {
		s.probeAll(ctx) // synchronous ticks
	}
	cancel()
	if n := eng.health.Load(); n != 0 {
		t.Errorf("probes while a real trial was in flight = %d, want 0", n)
	}
	trial(S)
	if got := s.State("a"); got != Closed {
		t.Errorf("State = %v, want closed", got)
	}
}
