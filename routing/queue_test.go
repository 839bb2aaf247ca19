package routing

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

func newRouter(t *testing.T, cfg Config, p Picker, ins ...discovery.Instance) *Router {
	t.Helper()
	r, err := New(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	r.Update(snapshot(t, ins...))
	return r
}

func capped(id string, n int, models ...string) discovery.Instance {
	in := inst(id, models...)
	in.Meta = map[string]string{"max_concurrency": fmt.Sprint(n)}
	return in
}

func req(model string, p Priority) *Request {
	return &Request{Model: []byte(model), Priority: p}
}

// mustAcquire acquires without waiting (the test knows there is room).
func mustAcquire(t *testing.T, r *Router, rq *Request) *Endpoint {
	t.Helper()
	ep, _, err := r.Acquire(context.Background(), rq)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	return ep
}

// queuedRouter has one instance "a" for model m with a cap of one, held by
// the returned endpoint, so every further request queues.
func queuedRouter(t *testing.T, cfg Config) (*Router, *Endpoint) {
	t.Helper()
	r := newRouter(t, cfg, &P2C{}, capped("a", 1, "m"))
	return r, mustAcquire(t, r, req("m", PriorityNormal))
}

type result struct {
	name string
	ep   *Endpoint
	err  error
}

// start runs Acquire in a goroutine and reports on out. Inside a synctest
// bubble, synctest.Wait() afterwards returns once it is queued.
func start(r *Router, ctx context.Context, name string, rq *Request, out chan<- result) {
	go func() {
		ep, _, err := r.Acquire(ctx, rq)
		out <- result{name, ep, err}
	}()
}

func TestQueueOrdersByPriorityThenArrival(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, held := queuedRouter(t, Config{})
		arrivals := []struct {
			name string
			p    Priority
		}{
			{"low1", PriorityLow}, {"normal1", PriorityNormal}, {"high1", PriorityHigh},
			{"low2", PriorityLow}, {"high2", PriorityHigh}, {"normal2", PriorityNormal},
		}
		out := make(chan result, len(arrivals))
		for _, a := range arrivals {
			start(r, t.Context(), a.name, req("m", a.p), out)
			synctest.Wait()
		}
		if got, want := r.Table().Model("m").Queued(), (Queued{High: 2, Normal: 2, Low: 2}); got != want {
			t.Errorf("queued = %+v, want %+v", got, want)
		}
		if r.QueueDepth(PriorityHigh) != 2 || r.QueueDepth(PriorityLow) != 2 {
			t.Errorf("QueueDepth high=%d low=%d, want 2 and 2", r.QueueDepth(PriorityHigh), r.QueueDepth(PriorityLow))
		}
		var order []string
		r.Release(held)
		for range arrivals {
			res := <-out
			if res.err != nil {
				t.Fatalf("%s: %v", res.name, res.err)
			}
			order = append(order, res.name)
			r.Release(res.ep)
		}
		want := []string{"high1", "high2", "normal1", "normal2", "low1", "low2"}
		if diff := cmp.Diff(want, order); diff != "" {
			t.Errorf("service order (-want +got):\n%s", diff)
		}
		checkIdle(t, r)
	})
}

func TestQueueWaitExpiresPerPriority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, held := queuedRouter(t, Config{QueueWaitLow: time.Second, QueueWaitNormal: 3 * time.Second})
		out := make(chan result, 2)
		begin := time.Now()
		start(r, t.Context(), "low", req("m", PriorityLow), out)
		start(r, t.Context(), "normal", req("m", PriorityNormal), out)
		synctest.Wait()
		for _, want := range []struct {
			name  string
			after time.Duration
		}{{"low", time.Second}, {"normal", 3 * time.Second}} {
			res := <-out
			if res.name != want.name || !errors.Is(res.err, ErrQueueTimeout) {
				t.Errorf("got %s: %v; want %s to time out", res.name, res.err, want.name)
			}
			if waited := time.Since(begin); waited != want.after {
				t.Errorf("%s waited %v, want %v", res.name, waited, want.after)
			}
		}
		r.Release(held)
		checkIdle(t, r)
	})
}

func TestQueueFullShedsLowFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, held := queuedRouter(t, Config{QueueMax: 2})
		out := make(chan result, 8)
		start(r, t.Context(), "low1", req("m", PriorityLow), out)
		synctest.Wait()
		start(r, t.Context(), "low2", req("m", PriorityLow), out)
		synctest.Wait()

		steps := []struct {
			name     string
			p        Priority
			shed     string // who fails with ErrQueueFull
			depthNow Queued
		}{
			// Full of lows: a normal evicts the newest low.
			{"normal1", PriorityNormal, "low2", Queued{Normal: 1, Low: 1}},
			// Full; a low has nobody below it: refused itself.
			{"low3", PriorityLow, "low3", Queued{Normal: 1, Low: 1}},
			// A high evicts the remaining low before any normal.
			{"high1", PriorityHigh, "low1", Queued{High: 1, Normal: 1}},
			// Full of normal and high: another normal is refused.
			{"normal2", PriorityNormal, "normal2", Queued{High: 1, Normal: 1}},
			// A high evicts the normal.
			{"high2", PriorityHigh, "normal1", Queued{High: 2}},
		}
		for _, s := range steps {
			start(r, t.Context(), s.name, req("m", s.p), out)
			res := <-out
			if res.name != s.shed || !errors.Is(res.err, ErrQueueFull) {
				t.Fatalf("%s arrived: %s got %v; want %s shed with ErrQueueFull", s.name, res.name, res.err, s.shed)
			}
			synctest.Wait()
			if got := r.Table().Model("m").Queued(); got != s.depthNow {
				t.Errorf("after %s: queued %+v, want %+v", s.name, got, s.depthNow)
			}
		}
		r.Release(held)
		for range 2 {
			res := <-out
			if res.err != nil {
				t.Errorf("%s: %v", res.name, res.err)
				continue
			}
			r.Release(res.ep)
		}
		checkIdle(t, r)
	})
}

func TestQueueLeavesOnContextEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, held := queuedRouter(t, Config{})
		out := make(chan result, 2)
		ctx, cancel := context.WithCancel(t.Context())
		start(r, ctx, "cancelled", req("m", PriorityHigh), out)
		synctest.Wait()
		start(r, t.Context(), "next", req("m", PriorityNormal), out)
		synctest.Wait()
		cancel()
		if res := <-out; res.name != "cancelled" || !errors.Is(res.err, context.Canceled) {
			t.Fatalf("got %s: %v; want the cancelled one with context.Canceled", res.name, res.err)
		}
		synctest.Wait()
		if got := r.QueueDepth(PriorityHigh); got != 0 {
			t.Errorf("high depth %d after its only waiter left", got)
		}
		// The cancelled head's place goes to the next waiter.
		r.Release(held)
		res := <-out
		if res.name != "next" || res.err != nil {
			t.Fatalf("got %s: %v; want next to get the instance", res.name, res.err)
		}
		r.Release(res.ep)

		// A context already ended never queues.
		done, stop := context.WithCancel(t.Context())
		stop()
		if _, _, err := r.Acquire(done, req("m", PriorityNormal)); !errors.Is(err, context.Canceled) {
			t.Errorf("ended context: %v", err)
		}
		checkIdle(t, r)
	})
}

func TestReleaseWakesTheModelsOfThatInstance(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// a serves m1 and m2, b serves m2 only; each takes one request.
		r := newRouter(t, Config{}, &P2C{}, capped("a", 1, "m1", "m2"), capped("b", 1, "m2"))
		heldA := mustAcquire(t, r, req("m1", PriorityNormal))
		heldB := mustAcquire(t, r, req("m2", PriorityNormal))
		if heldA.Instance.ID != "a" || heldB.Instance.ID != "b" {
			t.Fatalf("setup: got %s and %s", heldA.Instance.ID, heldB.Instance.ID)
		}
		out := make(chan result, 3)
		start(r, t.Context(), "m1", req("m1", PriorityNormal), out)
		synctest.Wait()
		start(r, t.Context(), "m2", req("m2", PriorityNormal), out)
		synctest.Wait()

		// b frees: only m2's waiter can use it.
		r.Release(heldB)
		res := <-out
		if res.name != "m2" || res.err != nil || res.ep.Instance.ID != "b" {
			t.Fatalf("release of b woke %s (%v, %v); want m2 on b", res.name, res.ep, res.err)
		}
		synctest.Wait()
		if got := r.QueueDepth(PriorityNormal); got != 1 {
			t.Fatalf("depth %d, want m1's waiter still queued", got)
		}
		// a frees: m1's waiter takes it.
		r.Release(heldA)
		res2 := <-out
		if res2.name != "m1" || res2.err != nil || res2.ep.Instance.ID != "a" {
			t.Fatalf("release of a woke %s (%v, %v); want m1 on a", res2.name, res2.ep, res2.err)
		}
		r.Release(res.ep)
		r.Release(res2.ep)
		checkIdle(t, r)
	})
}

func TestOneModelsBacklogDoesNotDelayAnother(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRouter(t, Config{}, &P2C{}, capped("a", 1, "busy"), inst("b", "idle"))
		held := mustAcquire(t, r, req("busy", PriorityNormal))
		out := make(chan result, 50)
		for i := range 50 {
			start(r, t.Context(), fmt.Sprint("busy", i), req("busy", PriorityHigh), out)
		}
		synctest.Wait()
		begin := time.Now()
		for range 20 {
			ep := mustAcquire(t, r, req("idle", PriorityLow))
			r.Release(ep)
		}
		if waited := time.Since(begin); waited != 0 {
			t.Errorf("idle model's requests waited %v behind busy's backlog", waited)
		}
		r.Release(held)
		for range 50 {
			if res := <-out; res.err == nil {
				r.Release(res.ep)
			} else {
				t.Errorf("%s: %v", res.name, res.err)
			}
		}
		checkIdle(t, r)
	})
}

func TestCapacityEventsWakeWaiters(t *testing.T) {
	// Instance a (cap 2) is full through its peers' requests; b is open.
	// Each case frees capacity without a local release, and the queued
	// request must notice.
	tests := []struct {
		name string
		free func(r *Router, a, b *Endpoint)
	}{
		{"peers drop", func(_ *Router, a, _ *Endpoint) { a.Load.SetPeerInFlight(1) }},
		{"breaker closes", func(_ *Router, _, b *Endpoint) { b.Load.SetBreaker(BreakerHalfOpen) }},
		{"new instance", func(r *Router, _, _ *Endpoint) {
			r.Update(snapshot(t, capped("a", 2, "m"), inst("b", "m"), inst("c", "m")))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRouter(t, Config{}, &P2C{}, capped("a", 2, "m"), inst("b", "m"))
				a, b := r.Table().Endpoint("a"), r.Table().Endpoint("b")
				a.Load.SetPeerInFlight(2)
				b.Load.SetBreaker(BreakerOpen)
				out := make(chan result, 1)
				start(r, t.Context(), "w", req("m", PriorityNormal), out)
				synctest.Wait()
				if r.QueueDepth(PriorityNormal) != 1 {
					t.Fatal("setup did not saturate the model")
				}
				tc.free(r, a, b)
				res := <-out
				if res.err != nil {
					t.Fatalf("waiter: %v", res.err)
				}
				r.Release(res.ep)
				a.Load.SetPeerInFlight(0)
				checkIdle(t, r)
			})
		})
	}
	t.Run("engine shows more slots", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := newRouter(t, Config{}, &P2C{}, capped("a", 8, "m"))
			a := r.Table().Endpoint("a")
			// The engine queues at 1 running: cap 1 + 1, and 2 are in flight.
			a.Load.SetPeerInFlight(2)
			a.Load.SetEngine(EngineStats{Waiting: 2, Running: 1, At: time.Now()})
			out := make(chan result, 1)
			start(r, t.Context(), "w", req("m", PriorityNormal), out)
			synctest.Wait()
			if r.QueueDepth(PriorityNormal) != 1 {
				t.Fatal("the engine's queue did not lower the cap")
			}
			// It runs 3 without queueing: 3 slots, cap 4, the waiter goes.
			a.Load.SetEngine(EngineStats{Running: 3, At: time.Now()})
			res := <-out
			if res.err != nil {
				t.Fatalf("waiter: %v", res.err)
			}
			r.Release(res.ep)
			a.Load.SetPeerInFlight(0)
			checkIdle(t, r)
		})
	})
}

func TestWaiterLearnsItsModelLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, held := queuedRouter(t, Config{})
		out := make(chan result, 1)
		start(r, t.Context(), "w", req("m", PriorityNormal), out)
		synctest.Wait()
		r.Update(snapshot(t, inst("b", "other")))
		if res := <-out; !errors.Is(res.err, ErrModelNotFound) {
			t.Errorf("waiter of a removed model: %v, want ErrModelNotFound", res.err)
		}
		held.Load.Release()
		// The queue stayed while its waiter was in it; empty, it goes.
		r.Update(snapshot(t, inst("b", "other")))
		if _, ok := r.st.queues["m"]; ok {
			t.Error("the empty queue of a removed model was kept")
		}
	})
}

func TestAcquireReleaseStorm(t *testing.T) {
	for _, policy := range []string{"p2c", "affinity", "round-robin", "least-load", "random"} {
		t.Run(policy, func(t *testing.T) {
			p, _ := NewPicker(policy)
			cfg := Config{QueueMax: 8, QueueWaitHigh: 5 * time.Second, QueueWaitNormal: 5 * time.Millisecond, QueueWaitLow: time.Millisecond}
			r := newRouter(t, cfg, p, capped("a", 2, "m", "n"), capped("b", 1, "m"), capped("c", 3, "n"))
			var wg sync.WaitGroup
			for g := range 32 {
				wg.Go(func() {
					rq := &Request{}
					for i := range 200 {
						rq.Reset()
						rq.Model = []byte([]string{"m", "n"}[(g+i)%2])
						rq.Priority = Priority(i % int(numPriorities))
						rq.AffinityKey, rq.HasAffinity = uint64(i%7), i%3 == 0
						ep, _, err := r.Acquire(context.Background(), rq)
						switch {
						case err == nil:
						case errors.Is(err, ErrQueueTimeout) && rq.Priority == PriorityHigh:
							// 5s is ages here: a lost wake-up.
							t.Errorf("high-priority request timed out in the queue")
							continue
						case errors.Is(err, ErrQueueFull), errors.Is(err, ErrQueueTimeout):
							continue
						default:
							t.Errorf("unexpected error %v", err)
							continue
						}
						if limit := r.Cap(ep); ep.Load.GlobalInFlight() > limit {
							t.Errorf("%s: %d in flight over its cap %d", ep.Instance.ID, ep.Load.GlobalInFlight(), limit)
						}
						for range i % 4 {
							runtime.Gosched() // hold the slot a little, so that others queue
						}
						r.Release(ep)
					}
				})
			}
			// Table swaps during the storm keep counters and queues.
			for range 20 {
				r.Update(snapshot(t, capped("a", 2, "m", "n"), capped("b", 1, "m"), capped("c", 3, "n")))
			}
			wg.Wait()
			checkIdle(t, r)
		})
	}
}

// checkIdle verifies that nothing is in flight or queued and that the pool
// sums agree.
func checkIdle(t *testing.T, r *Router) {
	t.Helper()
	for _, ep := range r.Table().Endpoints() {
		if n := ep.Load.InFlight(); n != 0 {
			t.Errorf("%s: %d in flight after every request ended", ep.Instance.ID, n)
		}
	}
	for p := range numPriorities {
		if n := r.QueueDepth(p); n != 0 {
			t.Errorf("%s: %d still queued", p, n)
		}
	}
	checkPoolSums(t, r)
}
