package routing

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestCapExcludesSaturatedInstances(t *testing.T) {
	r := newRouter(t, Config{}, &RoundRobin{}, capped("a", 1, "m"), capped("b", 2, "m"))
	var held []*Endpoint
	for range 3 {
		held = append(held, mustAcquire(t, r, req("m", PriorityNormal)))
	}
	got := map[string]int{}
	for _, ep := range held {
		got[ep.Instance.ID]++
	}
	if diff := cmp.Diff(map[string]int{"a": 1, "b": 2}, got); diff != "" {
		t.Errorf("acquired past a cap (-want +got):\n%s", diff)
	}
	if _, _, err := r.Pick(req("m", PriorityNormal)); !errors.Is(err, ErrSaturated) || !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("all at cap: err = %v, want ErrSaturated wrapping ErrNoHealthyUpstream", err)
	}
	r.Release(held[0])
	if ep, _, err := r.Pick(req("m", PriorityNormal)); err != nil || ep != held[0] {
		t.Errorf("after a release: picked %v, %v; want the freed instance", ep, err)
	}
	// Not saturated but unusable: waiting would not help.
	rq := req("m", PriorityNormal)
	for _, ep := range r.Table().Endpoints() {
		rq.Exclude(ep)
	}
	if _, _, err := r.Pick(rq); !errors.Is(err, ErrNoHealthyUpstream) || errors.Is(err, ErrSaturated) {
		t.Errorf("all tried: err = %v, want ErrNoHealthyUpstream only", err)
	}
}

func TestCapSources(t *testing.T) {
	now := time.Unix(5000, 0)
	tests := []struct {
		name   string
		cfg    Config
		meta   string // max_concurrency; "" for none
		engine *EngineStats
		want   int64
	}{
		{"default", Config{}, "", nil, DefaultMaxInflightPerInstance},
		{"config", Config{MaxInflightPerInstance: 8}, "", nil, 8},
		{"no cap", Config{MaxInflightPerInstance: -1}, "", nil, 0},
		{"meta overrides", Config{MaxInflightPerInstance: 8}, "3", nil, 3},
		{"bad meta ignored", Config{MaxInflightPerInstance: 8}, "lots", nil, 8},
		{"zero meta ignored", Config{MaxInflightPerInstance: 8}, "0", nil, 8},
		// A queueing engine teaches its slots; the cap is slots + 1.
		{"engine queueing lowers", Config{MaxInflightPerInstance: 8}, "", &EngineStats{Waiting: 4, Running: 5, At: now}, 6},
		{"never below 1 slot", Config{MaxInflightPerInstance: 8}, "", &EngineStats{Waiting: 4, Running: 0, At: now}, 2},
		{"lowers an unlimited cap", Config{MaxInflightPerInstance: -1}, "", &EngineStats{Waiting: 1, Running: 6, At: now}, 7},
		{"never raises", Config{MaxInflightPerInstance: 8}, "", &EngineStats{Waiting: 1, Running: 50, At: now}, 8},
		{"no queue, no change", Config{MaxInflightPerInstance: 8}, "", &EngineStats{Waiting: 0, Running: 2, At: now}, 8},
		// Slots are capacity, not load: they outlive the scrape's freshness.
		{"slots outlive staleness", Config{MaxInflightPerInstance: 8}, "", &EngineStats{Waiting: 4, Running: 5, At: now.Add(-DefaultEngineStaleAfter - time.Second)}, 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := inst("a", "m")
			if tc.meta != "" {
				in.Meta = map[string]string{"max_concurrency": tc.meta}
			}
			r, err := New(tc.cfg, &P2C{})
			if err != nil {
				t.Fatal(err)
			}
			r.now = func() time.Time { return now }
			ep := r.Update(snapshot(t, in)).Endpoint("a")
			if tc.engine != nil {
				ep.Load.SetEngine(*tc.engine)
			}
			if got := r.Cap(ep); got != tc.want {
				t.Errorf("cap = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestLearnedSlots is the regression test of the routing experiment's
// finding: the cap must not swing back to the base the moment a scrape
// sees an empty queue (that dumped bursts onto slow engines), yet must rise
// when the engine shows it can run more.
func TestLearnedSlots(t *testing.T) {
	r := newRouter(t, Config{MaxInflightPerInstance: 64}, &P2C{}, inst("a", "m"))
	ep := r.Table().Endpoint("a")
	steps := []struct {
		scrape EngineStats
		want   int64
	}{
		{EngineStats{Running: 3}, 64},            // nothing learned yet
		{EngineStats{Running: 8, Waiting: 2}, 9}, // saturated at 8 slots
		{EngineStats{Running: 8}, 9},             // queue drained: still 8 slots
		{EngineStats{Running: 9}, 10},            // ran the headroom without queueing
		{EngineStats{Running: 4, Waiting: 1}, 5}, // now saturated at 4 (KV-bound)
		{EngineStats{Running: 2}, 5},             // running less says nothing
	}
	for i, st := range steps {
		ep.Load.SetEngine(st.scrape)
		if got := r.Cap(ep); got != st.want {
			t.Errorf("step %d (%+v): cap %d, want %d", i, st.scrape, got, st.want)
		}
	}
}

func TestFreshEngineQueueCountsInLoad(t *testing.T) {
	now := time.Unix(5000, 0)
	r := newRouter(t, Config{}, &LeastLoad{}, inst("a", "m"), inst("b", "m"))
	r.now = func() time.Time { return now }
	a, b := r.Table().Endpoint("a"), r.Table().Endpoint("b")
	a.Load.Acquire() // a: 1 in flight
	b.Load.SetEngine(EngineStats{Waiting: 3, Running: 1, At: now})
	if ep, _, _ := r.Pick(req("m", PriorityNormal)); ep != a {
		t.Errorf("picked %s; b's engine queue of 3 makes it busier than a", ep.Instance.ID)
	}
	b.Load.SetEngine(EngineStats{Waiting: 3, Running: 1, At: now.Add(-time.Hour)})
	if ep, _, _ := r.Pick(req("m", PriorityNormal)); ep != b {
		t.Errorf("picked %s; b's stale scrape must be ignored", ep.Instance.ID)
	}
	a.Load.Release()
}
