package routing

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

func snapshot(t testing.TB, ins ...discovery.Instance) discovery.Snapshot {
	t.Helper()
	s, err := discovery.NewSnapshot("test", ins, time.Unix(1700000000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func inst(id string, models ...string) discovery.Instance {
	return discovery.Instance{ID: id, Address: "127.0.0.1:1", Models: models}
}

func TestTableModels(t *testing.T) {
	r := NewRouter(&RoundRobin{})
	d := inst("c", "only-draining")
	d.Draining = true
	tab := r.Update(snapshot(t, inst("a", "m1", "m2"), inst("b", "m2"), d))

	if diff := cmp.Diff([]string{"m1", "m2", "only-draining"}, tab.Models()); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
	want := `{"object":"list","data":[{"id":"m1","object":"model","created":1700000000,"owned_by":"blitzscale"},{"id":"m2","object":"model","created":1700000000,"owned_by":"blitzscale"}]}`
	if got := string(tab.ModelsJSON()); got != want {
		t.Errorf("models JSON lists draining-only model or differs:\n got %s\nwant %s", got, want)
	}
	if got := len(tab.ForModel([]byte("m2")).Endpoints); got != 2 {
		t.Errorf("m2 endpoints = %d, want 2", got)
	}
	if tab.ForModel([]byte("nope")) != nil {
		t.Error("unknown model has a route")
	}
}

func TestPickErrors(t *testing.T) {
	r := NewRouter(&RoundRobin{})
	if _, _, err := r.Pick(&Request{Model: []byte("m")}); !errors.Is(err, ErrNoTable) {
		t.Fatalf("before Update: err = %v, want ErrNoTable", err)
	}
	d := inst("a", "m")
	d.Draining = true
	r.Update(snapshot(t, d))
	tests := []struct {
		model string
		want  error
	}{
		{"m", ErrNoHealthyUpstream},
		{"other", ErrModelNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			if _, _, err := r.Pick(&Request{Model: []byte(tc.model)}); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestPickExcludesTriedAndReportsRetry(t *testing.T) {
	r := NewRouter(&RoundRobin{})
	r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	req := &Request{Model: []byte("m")}
	first, route, err := r.Pick(req)
	if err != nil || route != RouteRoundRobin {
		t.Fatalf("first pick: %v %v", route, err)
	}
	req.Exclude(first)
	second, route, err := r.Pick(req)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || route != RouteRetry {
		t.Errorf("retry picked %s via %s, want the other instance via retry", second.Instance.ID, route)
	}
	req.Exclude(second)
	if _, _, err := r.Pick(req); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("all tried: err = %v, want ErrNoHealthyUpstream", err)
	}
}

type denyFilter struct{ id string }

func (f denyFilter) Keep(ep *Endpoint) bool { return ep.Instance.ID != f.id }

func TestFilters(t *testing.T) {
	r := NewRouter(&RoundRobin{}, denyFilter{"a"})
	r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	for range 10 {
		ep, _, err := r.Pick(&Request{Model: []byte("m")})
		if err != nil || ep.Instance.ID != "b" {
			t.Fatalf("picked %v, %v; the filter excludes a", ep, err)
		}
	}
}

func TestLoadSurvivesTableSwap(t *testing.T) {
	r := NewRouter(&LeastLoad{})
	r.Update(snapshot(t, inst("a", "m")))
	ep, _, _ := r.Pick(&Request{Model: []byte("m")})
	ep.Load.Acquire()
	// The instance leaves and comes back while a request is open: the same
	// counters must be used, or the release would be lost.
	r.Update(snapshot(t, inst("b", "m")))
	tab := r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	if got := tab.ForModel([]byte("m")).Endpoints[0].Load; got != ep.Load {
		t.Fatal("instance a got new counters while a request was in flight")
	}
	ep.Load.Release()
	if n := ep.Load.InFlight(); n != 0 {
		t.Fatalf("in flight = %d, want 0", n)
	}
	// Gone with nothing in flight: forgotten.
	r.Update(snapshot(t, inst("b", "m")))
	tab = r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	if tab.ForModel([]byte("m")).Endpoints[0].Load == ep.Load {
		t.Error("idle counters of a departed instance were kept forever")
	}
}

func TestReleasePanicsOnNegative(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Release below zero did not panic")
		}
	}()
	new(Load).Release()
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	r := NewRouter(&RoundRobin{})
	r.Update(snapshot(t, inst("a", "m"), inst("b", "m"), inst("c", "m")))
	counts := map[string]int{}
	for range 300 {
		ep, _, _ := r.Pick(&Request{Model: []byte("m")})
		counts[ep.Instance.ID]++
	}
	if diff := cmp.Diff(map[string]int{"a": 100, "b": 100, "c": 100}, counts); diff != "" {
		t.Errorf("round-robin counts (-want +got):\n%s", diff)
	}
}

func TestLeastLoadPicksLowestGlobalLoadOverWeight(t *testing.T) {
	heavy := inst("heavy", "m")
	heavy.Weight = 4
	r := NewRouter(&LeastLoad{})
	tab := r.Update(snapshot(t, inst("a", "m"), inst("b", "m"), heavy))
	eps := map[string]*Endpoint{}
	for _, ep := range tab.Endpoints() {
		eps[ep.Instance.ID] = ep
	}
	eps["a"].Load.Acquire()          // a: 1/1
	eps["b"].Load.SetPeerInFlight(2) // b: 2/1 (peers)
	for range 3 {                    // heavy: 3/4
		eps["heavy"].Load.Acquire()
	}
	for range 5 {
		ep, route, _ := r.Pick(&Request{Model: []byte("m")})
		if ep.Instance.ID != "heavy" || route != RouteLeastLoad {
			t.Fatalf("picked %s via %s, want heavy (0.75) via least-load", ep.Instance.ID, route)
		}
	}
}

func TestLeastLoadSpreadsTies(t *testing.T) {
	r := NewRouter(&LeastLoad{})
	r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	seen := map[string]bool{}
	for range 4 {
		ep, _, _ := r.Pick(&Request{Model: []byte("m")})
		seen[ep.Instance.ID] = true
	}
	if len(seen) != 2 {
		t.Errorf("ties always went to %v", seen)
	}
}

func TestP2C(t *testing.T) {
	// A fixed sequence of "random" draws: first i=0, then j=0 (→ 1).
	draws := []uint64{0, 0}
	p := &P2C{Rand: func(n uint64) uint64 { d := draws[0]; draws = draws[1:]; return d % n }}
	r := NewRouter(p)
	tab := r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	tab.Endpoints()[0].Load.Acquire()
	ep, route, _ := r.Pick(&Request{Model: []byte("m")})
	if ep.Instance.ID != "b" || route != RouteP2C {
		t.Errorf("p2c picked %s via %s, want the less loaded b", ep.Instance.ID, route)
	}
	tab.Endpoints()[0].Load.Release()

	// Equal load: the lower EWMA TTFT wins.
	tab.Endpoints()[0].Load.ObserveTTFT(200 * time.Millisecond)
	tab.Endpoints()[1].Load.ObserveTTFT(50 * time.Millisecond)
	draws = []uint64{0, 0}
	if ep, _, _ := r.Pick(&Request{Model: []byte("m")}); ep.Instance.ID != "b" {
		t.Errorf("tie broken towards %s, want b with the lower TTFT", ep.Instance.ID)
	}
}

func TestNewPicker(t *testing.T) {
	for _, name := range Policies {
		if _, err := NewPicker(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewPicker("fastest"); !errors.Is(err, ErrUnknownPolicy) {
		t.Errorf("unknown policy: err = %v", err)
	}
}

func TestConcurrentPickAndUpdate(t *testing.T) {
	r := NewRouter(&LeastLoad{})
	r.Update(snapshot(t, inst("a", "m"), inst("b", "m")))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			req := &Request{}
			for range 2000 {
				req.Reset()
				req.Model = []byte("m")
				if ep, _, err := r.Pick(req); err == nil {
					ep.Load.Acquire()
					ep.Load.Release()
				}
			}
		})
	}
	for i := range 200 {
		r.Update(snapshot(t, inst("a", "m"), inst(fmt.Sprintf("x%d", i%3), "m")))
	}
	wg.Wait()
	for _, ep := range r.Table().Endpoints() {
		if n := ep.Load.InFlight(); n != 0 {
			t.Errorf("%s in flight = %d after all requests ended", ep.Instance.ID, n)
		}
	}
}

func TestEWMA(t *testing.T) {
	var l Load
	l.ObserveTTFT(100 * time.Millisecond)
	if got := l.TTFT(); got != 100*time.Millisecond {
		t.Fatalf("first sample: %v", got)
	}
	l.ObserveTTFT(200 * time.Millisecond)
	if got := l.TTFT(); got != 120*time.Millisecond {
		t.Errorf("after 200ms: %v, want 120ms (alpha 0.2)", got)
	}
}

// TestConfirmationKeepsTheRouting: a snapshot that only confirms the view
// (same instances, later sync time) keeps the table's routing, endpoints
// and /v1/models body, and carries the new sync time; a changed instance
// and a reconfiguration rebuild it.
func TestConfirmationKeepsTheRouting(t *testing.T) {
	r := NewRouter(&RoundRobin{})
	snap := snapshot(t, capped("a", 4, "m"), inst("b", "m"))
	first := r.Update(snap)

	confirm := snap
	confirm.SyncedAt = snap.SyncedAt.Add(30 * time.Second)
	got := r.Update(confirm)
	if r.Table() != got || !got.Snapshot().SyncedAt.Equal(confirm.SyncedAt) {
		t.Fatalf("current table synced at %v; want the confirmation's %v", r.Table().Snapshot().SyncedAt, confirm.SyncedAt)
	}
	if got.Endpoint("a") != first.Endpoint("a") || !got.BuiltAt().Equal(first.BuiltAt()) || string(got.ModelsJSON()) != string(first.ModelsJSON()) {
		t.Error("a confirmation rebuilt the table")
	}

	for _, tc := range []struct {
		name   string
		change func(*discovery.Snapshot)
	}{
		{"address", func(s *discovery.Snapshot) { s.Instances[1].Address = "127.0.0.1:2" }},
		{"meta", func(s *discovery.Snapshot) { s.Instances[0].Meta = map[string]string{"max_concurrency": "8"} }},
		{"draining", func(s *discovery.Snapshot) { s.Instances[1].Draining = true }},
		{"stale", func(s *discovery.Snapshot) { s.Stale = true }},
		{"source", func(s *discovery.Snapshot) { s.Source = "other" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := snapshot(t, capped("a", 4, "m"), inst("b", "m"))
			tc.change(&next)
			before := r.Update(snap)
			after := r.Update(next)
			if after.Endpoint("a") == before.Endpoint("a") {
				t.Errorf("a changed %s kept the old table", tc.name)
			}
		})
	}

	// A reload rebuilds the same view under the new caps.
	before := r.Update(snap)
	if err := r.Reconfigure(Config{MaxInflightPerInstance: 3}, &RoundRobin{}); err != nil {
		t.Fatal(err)
	}
	after := r.Table()
	if after.Endpoint("b") == before.Endpoint("b") || after.Endpoint("b").MaxInflight != 3 {
		t.Errorf("reconfigured table: b's cap %d, same endpoint %v; want 3 on a new one",
			after.Endpoint("b").MaxInflight, after.Endpoint("b") == before.Endpoint("b"))
	}
}
