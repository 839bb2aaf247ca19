package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeRegistrar records the calls KeepRegistered makes.
type fakeRegistrar struct {
	mu    sync.Mutex
	calls []string
	fail  bool // every call fails
}

func (f *fakeRegistrar) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.fail {
		return errors.New("registry down")
	}
	return nil
}

func (f *fakeRegistrar) Register(_ context.Context, in Instance) error {
	if in.Draining {
		return f.record("register-draining")
	}
	return f.record("register")
}

func (f *fakeRegistrar) SetDraining(_ context.Context, d bool) error {
	if d {
		return f.record("drain")
	}
	return f.record("undrain")
}

func (f *fakeRegistrar) Deregister(context.Context) error { return f.record("deregister") }

func (f *fakeRegistrar) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// stepAfter hands every wait to the test, which fires it by hand.
type stepAfter chan afterCall

type afterCall struct {
	d    time.Duration
	fire chan time.Time
}

func (s stepAfter) After(d time.Duration) <-chan time.Time {
	c := afterCall{d: d, fire: make(chan time.Time, 1)}
	s <- c
	return c.fire
}

func (s stepAfter) next(t *testing.T) afterCall {
	t.Helper()
	select {
	case c := <-s:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("KeepRegistered asked for no wait")
		return afterCall{}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func engine(t *testing.T, handler http.HandlerFunc) Instance {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return Instance{ID: "e", Address: srv.Listener.Addr().String(), Models: []string{"m"}}
}

// run starts KeepRegistered and returns its result channel.
func run(ctx context.Context, reg Registrar, in Instance, cfg ProbeConfig) <-chan error {
	done := make(chan error, 1)
	go func() { done <- KeepRegistered(ctx, reg, in, cfg) }()
	return done
}

func TestProbeFallsBackToModelsOnlyWhenHealthIsMissing(t *testing.T) {
	tests := []struct {
		name         string
		healthStatus int
		modelsStatus int
		want         bool
	}{
		{"health ok", 200, 500, true},
		{"no health route, models ok", 404, 200, true},
		{"health method not allowed, models ok", 405, 200, true},
		{"health failing is not masked by models", 503, 200, false},
		{"both missing", 404, 404, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := engine(t, func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/health":
					w.WriteHeader(tt.healthStatus)
				case "/v1/models":
					w.WriteHeader(tt.modelsStatus)
				default:
					w.WriteHeader(404)
				}
			})
			cfg := ProbeConfig{}.withDefaults(in)
			if got := probe(context.Background(), cfg); got != tt.want {
				t.Fatalf("probe = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestKeepRegisteredLifecycle(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(false)
	in := engine(t, func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			w.WriteHeader(500)
		}
	})
	reg := &fakeRegistrar{}
	clock := make(stepAfter)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := run(ctx, reg, in, ProbeConfig{
		Interval: time.Second, FailuresToDrain: 2, FailuresToRemove: 3, DrainPeriod: 7 * time.Second,
		After: clock.After, Logger: quiet(),
	})

	step := func(want ...string) {
		t.Helper()
		c := clock.next(t)
		if c.d != time.Second {
			t.Fatalf("wait %v, want the probe interval", c.d)
		}
		if got := reg.log(); !slices.Equal(got, want) {
			t.Fatalf("calls = %v, want %v", got, want)
		}
		c.fire <- time.Now()
	}
	step() // unhealthy at start: not registered
	healthy.Store(true)
	step("register") // first healthy probe
	step("register") // still healthy: no rewrite
	healthy.Store(false)
	step("register")                        // failure 1
	step("register", "drain")               // failure 2: draining
	step("register", "drain", "deregister") // failure 3: removed
	healthy.Store(true)
	step("register", "drain", "deregister", "register") // back

	cancel()
	c := clock.next(t)
	if c.d != 7*time.Second {
		t.Fatalf("shutdown wait %v, want the drain period", c.d)
	}
	if got := reg.log(); got[len(got)-1] != "drain" {
		t.Fatalf("calls = %v, want draining before the drain period", got)
	}
	c.fire <- time.Now()
	if err := <-done; err != nil {
		t.Fatalf("KeepRegistered = %v, want nil", err)
	}
	if got := reg.log(); got[len(got)-1] != "deregister" {
		t.Fatalf("calls = %v, want deregister last", got)
	}
}

func TestKeepRegisteredDrainAbortAndRegistryErrors(t *testing.T) {
	in := engine(t, func(http.ResponseWriter, *http.Request) {})
	reg := &fakeRegistrar{}
	clock := make(stepAfter)
	abort := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := run(ctx, reg, in, ProbeConfig{After: clock.After, DrainAbort: abort, Logger: quiet()})
	clock.next(t) // registered, waiting for the next probe
	cancel()
	if c := clock.next(t); c.d != DefaultDrainPeriod {
		t.Fatalf("drain wait %v, want default %v", c.d, DefaultDrainPeriod)
	}
	reg.mu.Lock()
	reg.fail = true
	reg.mu.Unlock()
	close(abort) // a second signal: stop waiting
	if err := <-done; err == nil {
		t.Fatal("KeepRegistered = nil, want the failed deregistration")
	}
}

func TestKeepRegisteredRejectsBadInput(t *testing.T) {
	good := Instance{ID: "e", Address: "127.0.0.1:1", Models: []string{"m"}}
	if err := KeepRegistered(context.Background(), &fakeRegistrar{}, Instance{ID: "e"}, ProbeConfig{}); !errors.Is(err, ErrInvalidInstance) {
		t.Fatalf("invalid instance: %v", err)
	}
	for name, cfg := range map[string]ProbeConfig{
		"relative path":       {HealthPath: "health"},
		"negative interval":   {Interval: -time.Second},
		"remove before drain": {FailuresToDrain: 4, FailuresToRemove: 2},
	} {
		if err := KeepRegistered(context.Background(), &fakeRegistrar{}, good, cfg); !errors.Is(err, ErrInvalidProbeConfig) {
			t.Errorf("%s: %v, want ErrInvalidProbeConfig", name, err)
		}
	}
}
