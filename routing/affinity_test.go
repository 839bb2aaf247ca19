package routing

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

// keyed returns a request for model m with affinity key k.
func keyed(m string, k uint64) *Request {
	return &Request{Model: []byte(m), AffinityKey: k, HasAffinity: true}
}

// testKey spreads test keys the way the sidecar's FNV-1a of a session does.
func testKey(i int) uint64 { return fnv1a(fnvOffset, fmt.Sprintf("session-%d", i)) }

// owners maps keys 0..n-1 to the instance id Pick chooses.
func owners(t *testing.T, r *Router, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range out {
		ep, _, err := r.Pick(keyed("m", testKey(i)))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = ep.Instance.ID
	}
	return out
}

func instances(n int) []discovery.Instance {
	ins := make([]discovery.Instance, n)
	for i := range ins {
		ins[i] = inst(fmt.Sprintf("gpu-%02d", i), "m")
	}
	return ins
}

func TestAffinityAgreesAcrossRouters(t *testing.T) {
	ins := instances(8)
	a := NewRouter(&Affinity{})
	a.Update(snapshot(t, ins...))
	// The second sidecar learns the instances in another order, with other
	// addresses and meta: only ids and weights place the ring.
	rev := slices.Clone(ins)
	slices.Reverse(rev)
	for i := range rev {
		rev[i].Address = fmt.Sprintf("10.0.0.%d:8000", i+1)
		rev[i].Meta = map[string]string{"zone": "b"}
	}
	b, err := New(Config{AffinityLoadFactor: 2}, &Affinity{})
	if err != nil {
		t.Fatal(err)
	}
	b.Update(snapshot(t, rev...))
	if diff := cmp.Diff(owners(t, a, 1000), owners(t, b, 1000)); diff != "" {
		t.Errorf("two routers built from the same snapshot disagree (-a +b):\n%s", diff)
	}
}

func TestAffinityShareFollowsWeight(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
	}{
		{"equal", []int{1, 1, 1, 1}},
		{"one double", []int{1, 1, 2}},
		{"skewed", []int{1, 3, 4}},
	}
	const keys = 20000
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ins := instances(len(tc.weights))
			total := 0
			for i, w := range tc.weights {
				ins[i].Weight = w
				total += w
			}
			r := NewRouter(&Affinity{})
			r.Update(snapshot(t, ins...))
			count := map[string]int{}
			for _, id := range owners(t, r, keys) {
				count[id]++
			}
			for i, w := range tc.weights {
				want := float64(w) / float64(total)
				got := float64(count[ins[i].ID]) / keys
				// 100 points per unit of weight: shares within ±25% of the
				// weighted share (relative), typically within ±10%.
				if math.Abs(got-want) > 0.25*want {
					t.Errorf("%s (weight %d): share %.3f, want about %.3f", ins[i].ID, w, got, want)
				}
			}
		})
	}
}

func TestAffinityRemovalMovesOnlyTheRemovedKeys(t *testing.T) {
	const n, keys = 10, 5000
	ins := instances(n)
	r := NewRouter(&Affinity{})
	r.Update(snapshot(t, ins...))
	before := owners(t, r, keys)
	gone := ins[3].ID
	r.Update(snapshot(t, slices.Delete(slices.Clone(ins), 3, 4)...))
	after := owners(t, r, keys)
	moved := 0
	for i := range before {
		if before[i] == after[i] {
			continue
		}
		moved++
		if before[i] != gone {
			t.Fatalf("key %d moved from %s to %s, though only %s left", i, before[i], after[i], gone)
		}
	}
	if frac := float64(moved) / keys; frac < 0.5/n || frac > 1.5/n {
		t.Errorf("%.3f of keys moved, want about 1/%d", frac, n)
	}
}

func TestAffinityBoundedLoad(t *testing.T) {
	r := NewRouter(&Affinity{})
	tab := r.Update(snapshot(t, instances(4)...))
	key := testKey(7)
	home, route, err := r.Pick(keyed("m", key))
	if err != nil || route != RouteAffinity {
		t.Fatalf("idle pick: %v via %q, %v", home, route, err)
	}

	// Bound with equal weights: in-flight+1 <= ceil(1.25 × (total+1) / 4).
	// Home at 3 with nothing elsewhere: 4 > ceil(1.25 × 4 / 4) = 2.
	for range 3 {
		home.Load.Acquire()
	}
	spill, route, err := r.Pick(keyed("m", key))
	if err != nil || spill == home || route != RouteAffinitySpill {
		t.Fatalf("home over the bound: picked %s via %q, %v; want another instance via affinity-spill", spill.Instance.ID, route, err)
	}
	// The spill target is the next instance on the ring: the same for every
	// sidecar, so a hot prefix spills to one place.
	other := NewRouter(&Affinity{})
	otherTab := other.Update(snapshot(t, instances(4)...))
	for range 3 {
		otherTab.Endpoint(home.Instance.ID).Load.Acquire()
	}
	if ep, _, _ := other.Pick(keyed("m", key)); ep.Instance.ID != spill.Instance.ID {
		t.Errorf("second router spilled to %s, first to %s", ep.Instance.ID, spill.Instance.ID)
	}

	// Others loaded too: total 3+2+2+2 = 9, bound ceil(1.25 × 10 / 4) = 4,
	// so home at 3 is within it again.
	for _, ep := range tab.Endpoints() {
		if ep != home {
			ep.Load.Acquire()
			ep.Load.Acquire()
		}
	}
	if ep, route, _ := r.Pick(keyed("m", key)); ep != home || route != RouteAffinity {
		t.Errorf("home within the bound: picked %s via %q, want %s via affinity", ep.Instance.ID, route, home.Instance.ID)
	}
	for _, ep := range tab.Endpoints() {
		for ep.Load.InFlight() > 0 {
			ep.Load.Release()
		}
	}
	if ep, route, _ := r.Pick(keyed("m", key)); ep != home || route != RouteAffinity {
		t.Errorf("after release: picked %s via %q, want %s via affinity", ep.Instance.ID, route, home.Instance.ID)
	}
	checkPoolSums(t, r)
}

func TestAffinitySkipsNonCandidatesWithoutSpilling(t *testing.T) {
	r := NewRouter(&Affinity{})
	r.Update(snapshot(t, instances(4)...))
	key := testKey(11)
	home, _, _ := r.Pick(keyed("m", key))

	home.Load.SetBreaker(BreakerOpen)
	next, route, err := r.Pick(keyed("m", key))
	if err != nil || next == home || route != RouteAffinity {
		t.Errorf("home open: picked %v via %q, %v; want the next instance via affinity", next, route, err)
	}
	home.Load.SetBreaker(BreakerClosed)

	// Draining home: the same next instance, like a ring without home.
	ins := instances(4)
	for i := range ins {
		if ins[i].ID == home.Instance.ID {
			ins[i].Draining = true
		}
	}
	r.Update(snapshot(t, ins...))
	if ep, route, _ := r.Pick(keyed("m", key)); ep.Instance.ID != next.Instance.ID || route != RouteAffinity {
		t.Errorf("home draining: picked %s via %q, want %s via affinity", ep.Instance.ID, route, next.Instance.ID)
	}

	// A retry excludes what it tried and says so.
	req := keyed("m", key)
	first, _, _ := r.Pick(req)
	req.Exclude(first)
	if ep, route, _ := r.Pick(req); ep == first || route != RouteRetry {
		t.Errorf("retry picked %s via %q", ep.Instance.ID, route)
	}
}

func TestAutoUsesAffinityOnlyWithKey(t *testing.T) {
	for _, policy := range []string{"auto", "affinity"} {
		t.Run(policy, func(t *testing.T) {
			p, err := NewPicker(policy)
			if err != nil {
				t.Fatal(err)
			}
			r := NewRouter(p)
			r.Update(snapshot(t, instances(5)...))
			tests := []struct {
				req  *Request
				want Route
			}{
				{&Request{Model: []byte("m")}, RouteP2C},
				{keyed("m", 0), RouteAffinity}, // a zero key is still a key
				{keyed("m", testKey(1)), RouteAffinity},
			}
			for _, tc := range tests {
				if _, route, err := r.Pick(tc.req); err != nil || route != tc.want {
					t.Errorf("HasAffinity=%v: route %q, %v; want %q", tc.req.HasAffinity, route, err, tc.want)
				}
			}
		})
	}
}

func TestAffinityFallsBackWhenTheRingIsOut(t *testing.T) {
	// Every instance but one is open: the walk may not reach it within its
	// budget, and the scan must still find it.
	ins := instances(60)
	r := NewRouter(&Affinity{})
	tab := r.Update(snapshot(t, ins...))
	for _, ep := range tab.Endpoints()[1:] {
		ep.Load.SetBreaker(BreakerOpen)
	}
	for i := range 200 {
		ep, _, err := r.Pick(keyed("m", testKey(i)))
		if err != nil || ep != tab.Endpoints()[0] {
			t.Fatalf("key %d: picked %v, %v; want the only closed instance", i, ep, err)
		}
	}
}

// checkPoolSums verifies the invariant the affinity bound relies on: every
// pool's sums equal a fresh scan of its instances.
func checkPoolSums(t *testing.T, r *Router) {
	t.Helper()
	tab := r.Table()
	for _, m := range tab.Models() {
		p := tab.byModel[m].pool
		var inflight, weight int64
		for _, ep := range p.endpoints {
			if !ep.draining && ep.Load.Breaker() != BreakerOpen {
				inflight += ep.Load.GlobalInFlight()
				weight += int64(ep.Weight)
			}
		}
		if got := p.inflight.Load(); got != inflight {
			t.Errorf("model %s: pool in-flight sum %d, scan says %d", m, got, inflight)
		}
		if got := p.weight.Load(); got != weight {
			t.Errorf("model %s: pool weight sum %d, scan says %d", m, got, weight)
		}
	}
}

func TestPoolSumsFollowEveryChange(t *testing.T) {
	r := NewRouter(&P2C{})
	heavy := inst("c", "m", "m:lora")
	heavy.Weight = 3
	tab := r.Update(snapshot(t, inst("a", "m", "m:lora"), inst("b", "m"), heavy))
	a, b, c := tab.Endpoint("a"), tab.Endpoint("b"), tab.Endpoint("c")
	steps := []struct {
		name string
		do   func()
	}{
		{"acquire", func() { a.Load.Acquire(); a.Load.Acquire(); c.Load.Acquire() }},
		{"peers", func() { b.Load.SetPeerInFlight(5); c.Load.SetPeerInFlight(2) }},
		{"breaker open", func() { b.Load.SetBreaker(BreakerOpen) }},
		{"release while open", func() { b.Load.Acquire(); b.Load.Release() }},
		{"half-open", func() { b.Load.SetBreaker(BreakerHalfOpen) }},
		{"peers drop", func() { b.Load.SetPeerInFlight(1) }},
		{"drain c", func() {
			d := heavy
			d.Draining = true
			tab = r.Update(snapshot(t, inst("a", "m", "m:lora"), inst("b", "m"), d))
		}},
		{"a leaves with requests open", func() { tab = r.Update(snapshot(t, inst("b", "m"), heavy)) }},
		{"release after leaving", func() { a.Load.Release() }},
		{"a returns", func() { tab = r.Update(snapshot(t, inst("a", "m", "m:lora"), inst("b", "m"), heavy)) }},
		{"release the rest", func() { a.Load.Release(); c.Load.Release() }},
	}
	for _, s := range steps {
		s.do()
		t.Run(s.name, func(t *testing.T) { checkPoolSums(t, r) })
	}
	if tab.byModel["m"].pool == tab.byModel["m:lora"].pool {
		t.Error("models with different instance sets share a pool")
	}
}

func TestModelsWithTheSameInstancesShareAPool(t *testing.T) {
	r := NewRouter(&Affinity{})
	tab := r.Update(snapshot(t, inst("a", "m", "m:lora1", "m:lora2"), inst("b", "m", "m:lora1", "m:lora2")))
	p := tab.byModel["m"].pool
	if tab.byModel["m:lora1"].pool != p || tab.byModel["m:lora2"].pool != p {
		t.Fatal("a base model and its adapters on the same instances got separate rings")
	}
	if got := len(p.queues); got != 3 {
		t.Errorf("shared pool wakes %d queues, want 3 (one per model)", got)
	}
}
