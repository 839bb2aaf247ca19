package consul

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
)

const loadPrefix = "blitzscale/services/llm/load/"

// fakeClock is a settable clock with a manual ticker, so that tests age
// load records without sleeping.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	tick chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), tick: make(chan time.Time)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	c.tick <- now
}

func (c *fakeClock) newTicker(time.Duration) (<-chan time.Time, func()) { return c.tick, func() {} }

func report(id string, seq uint64, inflight int64) discovery.LoadReport {
	return discovery.LoadReport{SidecarID: id, Seq: seq, PeriodMillis: 2000,
		Instances: []discovery.InstanceLoad{{ID: "gpu-0", InFlight: inflight, Breaker: "closed"}}}
}

func putReport(t testing.TB, f *fakeConsul, r discovery.LoadReport) {
	t.Helper()
	v, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	f.putKV(loadPrefix+r.SidecarID, v)
}

func sidecars(p discovery.PeerLoads) []string {
	out := []string{}
	for _, r := range p {
		out = append(out, r.SidecarID)
	}
	return out
}

func hasPeers(want ...string) func(discovery.PeerLoads) bool {
	if want == nil {
		want = []string{}
	}
	return func(p discovery.PeerLoads) bool { return slices.Equal(sidecars(p), want) }
}

func watchLoad(t testing.TB, cfg LoadSourceConfig) (*LoadSource, <-chan discovery.PeerLoads) {
	t.Helper()
	l, err := NewLoadSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := l.WatchLoad(ctx)
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	return l, ch
}

func TestLoadSourcePeersFreshAndStale(t *testing.T) {
	f := newFakeConsul(t)
	clock := newFakeClock()
	var logs logBuffer
	cfg := LoadSourceConfig{Config: testConfig(f), SidecarID: "me", Now: clock.Now, NewTicker: clock.newTicker}
	cfg.Logger = logs.logger()
	putReport(t, f, report("me", 1, 9)) // our own record is left out
	putReport(t, f, report("p1", 1, 3))
	f.putKV(loadPrefix+"p2", []byte(`{"sidecar_id":"p2","period_ms":0}`)) // no period: cannot be aged
	f.putKV(loadPrefix+"nested/p3", []byte(`{}`))                         // not a record of this prefix
	l, ch := watchLoad(t, cfg)

	got := next(t, ch, "[p1]", hasPeers("p1"))
	if diff := cmp.Diff(report("p1", 1, 3), got[0]); diff != "" {
		t.Errorf("p1's record (-want +got):\n%s", diff)
	}
	if l.InvalidValues() != 1 || logs.count("skipping invalid load record") != 1 {
		t.Errorf("invalid records: counted %d, logged %d; want 1 and 1", l.InvalidValues(), logs.count("skipping invalid load record"))
	}

	putReport(t, f, report("p4", 1, 1))
	next(t, ch, "[p1 p4]", hasPeers("p1", "p4"))

	// p1 stays silent; p4 publishes again just before p1 goes stale.
	clock.advance(5 * time.Second)
	putReport(t, f, report("p4", 2, 2))
	next(t, ch, "p4's new record", func(p discovery.PeerLoads) bool { return len(p) == 2 && p[1].Seq == 2 })
	clock.advance(1500 * time.Millisecond) // p1 received 6.5s ago: older than 3 × 2s
	next(t, ch, "p1 aged out", hasPeers("p4"))

	// A re-answer of p1's unchanged record must not make it fresh again.
	putReport(t, f, report("p5", 1, 1))
	next(t, ch, "[p4 p5]", hasPeers("p4", "p5"))

	// Deleting a record (its session ended) removes the peer.
	f.mu.Lock()
	f.deleteLocked(loadPrefix + "p4")
	f.mu.Unlock()
	next(t, ch, "p4 deleted", hasPeers("p5"))
	if l.InvalidValues() != 1 {
		t.Errorf("invalid records counted %d times, want once", l.InvalidValues())
	}
}

// TestLoadSourceEmptyPrefix: a list of an empty prefix is a 404 that still
// carries an index; the first view is empty and the query blocks on it.
func TestLoadSourceEmptyPrefix(t *testing.T) {
	f := newFakeConsul(t)
	clock := newFakeClock()
	_, ch := watchLoad(t, LoadSourceConfig{Config: testConfig(f), SidecarID: "me", Now: clock.Now, NewTicker: clock.newTicker})
	next(t, ch, "an empty view", hasPeers())
	eventually(t, "a blocking query", func() bool {
		sent := f.indexesSent("/v1/kv/" + loadPrefix)
		return len(sent) >= 2 && sent[1] != "0"
	})
	putReport(t, f, report("p1", 1, 1))
	next(t, ch, "[p1]", hasPeers("p1"))
}

// TestLoadSourcePacesByFleetSize: every answer carries the whole prefix, so
// the LoadSource spaces its queries by records / RecordsPerSecond even when
// records change all the time.
func TestLoadSourcePacesByFleetSize(t *testing.T) {
	f := newFakeConsul(t)
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5"} {
		putReport(t, f, report(id, 1, 1))
	}
	// Every query is answered at once with a new index, as under a fleet
	// that writes continuously.
	var mu sync.Mutex
	idx := uint64(1000)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/kv/"+loadPrefix {
			return false
		}
		mu.Lock()
		idx++
		i := idx
		mu.Unlock()
		f.mu.Lock()
		body, _, _ := f.kvGetLocked(loadPrefix, true)
		f.mu.Unlock()
		f.answer(w, body, i, true, 0, true)
		return true
	})
	clock := newFakeClock()
	cfg := LoadSourceConfig{Config: testConfig(f), SidecarID: "me", RecordsPerSecond: 50, Now: clock.Now, NewTicker: clock.newTicker}
	cfg.QueryInterval, cfg.QueryBurst = time.Millisecond, 1
	l, err := NewLoadSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	ch := l.WatchLoad(ctx)
	go func() {
		for range ch {
		}
	}()
	time.Sleep(500 * time.Millisecond) // the measurement: a rate over a window
	cancel()
	for range ch {
	}
	// 5 records at 50 records/s: one query per 100ms after the first.
	limit := 2 + int(time.Since(start)/(100*time.Millisecond))
	if got := int(l.Queries()); got > limit || got < 2 {
		t.Errorf("%d queries in %v, want 2..%d", got, time.Since(start), limit)
	}
}
