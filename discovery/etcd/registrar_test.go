package etcd

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// stepClock is KeepRegistered's After: each call hands the test a request it
// fires by hand, so the test steps through probes without sleeping.
type stepClock struct{ reqs chan afterReq }

type afterReq struct {
	d    time.Duration
	fire chan time.Time
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	r := afterReq{d: d, fire: make(chan time.Time, 1)}
	c.reqs <- r
	return r.fire
}

// next waits for KeepRegistered to ask for a wait of d and returns it.
func (c *stepClock) next(t *testing.T, d time.Duration) afterReq {
	t.Helper()
	select {
	case r := <-c.reqs:
		if r.d != d {
			t.Fatalf("waiting %v, want %v", r.d, d)
		}
		return r
	case <-time.After(waitFor):
		t.Fatalf("no wait of %v requested", d)
		return afterReq{}
	}
}

func (r afterReq) release() { r.fire <- time.Now() }

func TestKeepRegisteredEndToEnd(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	_, snaps := watchSource(t, testConfig(c, nil))
	recvUntil(t, snaps, "empty", hasIDs())

	var healthy atomic.Bool
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && healthy.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer engine.Close()
	healthy.Store(true)

	reg, err := NewRegistrar(RegistrarConfig{Config: testConfig(c, nil)})
	if err != nil {
		t.Fatal(err)
	}
	in := discovery.Instance{ID: "gpu-a-0", Address: engine.Listener.Addr().String(), Models: []string{"llama"}}
	const interval, drain = time.Second, 5 * time.Second
	clock := &stepClock{reqs: make(chan afterReq)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- discovery.KeepRegistered(ctx, reg, in, discovery.ProbeConfig{
			Interval: interval, FailuresToDrain: 2, FailuresToRemove: 3, DrainPeriod: drain,
			After: clock.After, Logger: quietLogger(),
		})
	}()
	draining := func(want bool) func(discovery.Snapshot) bool {
		return func(s discovery.Snapshot) bool {
			return len(s.Instances) == 1 && s.Instances[0].ID == in.ID && s.Instances[0].Draining == want
		}
	}

	// Healthy: registered after the first probe.
	tick := clock.next(t, interval)
	recvUntil(t, snaps, "registered", draining(false))

	// Engine fails: two failures drain, the third removes.
	healthy.Store(false)
	tick.release()
	clock.next(t, interval).release() // failure 1
	tick = clock.next(t, interval)    // failure 2 done: draining
	recvUntil(t, snaps, "draining after failures", draining(true))
	tick.release()
	tick = clock.next(t, interval) // failure 3 done: removed
	recvUntil(t, snaps, "removed after failures", hasIDs())

	// Engine recovers: registered again, not draining.
	healthy.Store(true)
	tick.release()
	clock.next(t, interval)
	recvUntil(t, snaps, "registered again", draining(false))

	// Shutdown: draining for the drain period, then deleted.
	cancel()
	drainWait := clock.next(t, drain)
	recvUntil(t, snaps, "draining on shutdown", draining(true))
	drainWait.release()
	recvUntil(t, snaps, "deleted after drain", hasIDs())
	if err := <-done; err != nil {
		t.Fatalf("KeepRegistered = %v, want nil", err)
	}
}

func TestRegistrarRules(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	if _, err := NewRegistrar(RegistrarConfig{Config: testConfig(c, nil), LeaseTTL: 5 * time.Second}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("TTL 5s: err = %v, want ErrInvalidConfig (contract: ≥ 10s)", err)
	}
	reg, err := NewRegistrar(RegistrarConfig{Config: testConfig(c, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	ctx := context.Background()
	if err := reg.SetDraining(ctx, true); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("SetDraining before Register = %v, want ErrNotRegistered", err)
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatalf("Deregister before Register = %v, want nil", err)
	}
	if err := reg.Register(ctx, discovery.Instance{ID: "x"}); !errors.Is(err, discovery.ErrInvalidInstance) {
		t.Fatalf("Register invalid = %v, want ErrInvalidInstance", err)
	}
	a := discovery.Instance{ID: "a", Address: net.JoinHostPort("10.0.0.1", "8000"), Models: []string{"m"}}
	if err := reg.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(ctx, instPrefix+"a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get: %v %v", resp, err)
	}
	leaseID := clientv3.LeaseID(resp.Kvs[0].Lease)
	lease, err := c.TimeToLive(ctx, leaseID)
	if err != nil || lease.GrantedTTL != 10 {
		t.Fatalf("lease TTL = %+v, %v; want granted 10s", lease, err)
	}
	b := a
	b.ID = "b"
	if err := reg.Register(ctx, b); err == nil {
		t.Fatal("Register of a second id succeeded, want an error")
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Get(ctx, instPrefix+"a"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after Deregister: %v %v, want no key", resp, err)
	}
	if lease, err := c.TimeToLive(ctx, leaseID); err != nil || lease.TTL != -1 {
		t.Fatalf("lease after Deregister = %+v, %v; want revoked (TTL -1)", lease, err)
	}
	// Registering again after Deregister works (KeepRegistered's recovery).
	if err := reg.Register(ctx, b); err != nil {
		t.Fatalf("Register after Deregister: %v", err)
	}
}
