package etcd

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const loadPrefix = "/blitzscale/services/llm/load/"

// fakeClock is a settable Now and a manual ticker for one LoadSource.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	tick chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), tick: make(chan time.Time)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// advance moves the clock and delivers one tick (blocking until the
// LoadSource takes it, so the re-check has happened when it returns).
func (f *fakeClock) advance(t testing.TB, d time.Duration) {
	t.Helper()
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	f.mu.Unlock()
	select {
	case f.tick <- now:
	case <-time.After(waitFor):
		t.Fatal("tick not taken")
	}
}

func (f *fakeClock) newTicker(time.Duration) (<-chan time.Time, func()) { return f.tick, func() {} }

func watchLoad(t testing.TB, c *clientv3.Client, self string, clock *fakeClock) (*LoadSource, <-chan discovery.PeerLoads) {
	t.Helper()
	l, err := NewLoadSource(LoadSourceConfig{Config: testConfig(c, nil), SidecarID: self, Now: clock.Now, NewTicker: clock.newTicker})
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

func newPublisher(t testing.TB, c *clientv3.Client, id string, ttl time.Duration) *Publisher {
	t.Helper()
	p, err := NewPublisher(PublisherConfig{Config: testConfig(c, nil), SidecarID: id, LeaseTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

func report(seq uint64, inflight int64) discovery.LoadReport {
	return discovery.LoadReport{Seq: seq, PeriodMillis: 2000, Instances: []discovery.InstanceLoad{{ID: "gpu-0", InFlight: inflight}}}
}

func peers(want ...string) func(discovery.PeerLoads) bool {
	return func(p discovery.PeerLoads) bool {
		if len(p) != len(want) {
			return false
		}
		for i := range p {
			if p[i].SidecarID != want[i] {
				return false
			}
		}
		return true
	}
}

func TestTwoSidecarsSeeEachOtherAndStaleRecordsVanish(t *testing.T) {
	srv := startServer(t, "", "")
	ca, cb := newClient(t, srv.Endpoints()), newClient(t, srv.Endpoints())
	pa, pb := newPublisher(t, ca, "side-a", 0), newPublisher(t, cb, "side-b", 0)
	clockA, clockB := newFakeClock(), newFakeClock()
	_, chA := watchLoad(t, ca, "side-a", clockA)
	_, chB := watchLoad(t, cb, "side-b", clockB)
	recvUntil(t, chA, "a: empty", peers())

	ctx := context.Background()
	if err := pa.Publish(ctx, report(1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := pb.Publish(ctx, report(1, 5)); err != nil {
		t.Fatal(err)
	}
	gotA := recvUntil(t, chA, "a sees b", peers("side-b"))
	gotB := recvUntil(t, chB, "b sees a", peers("side-a"))
	if gotA[0].Instances[0].InFlight != 5 || gotB[0].Instances[0].InFlight != 3 {
		t.Fatalf("in-flight seen by a = %+v, by b = %+v; want 5 and 3", gotA, gotB)
	}

	// b publishes a change: a sees it.
	if err := pb.Publish(ctx, report(2, 7)); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, chA, "a sees b's update", func(p discovery.PeerLoads) bool {
		return len(p) == 1 && p[0].Seq == 2 && p[0].Instances[0].InFlight == 7
	})

	// b goes silent. Three periods after a received it the record is still
	// fresh; one millisecond later it is gone, with no etcd event at all.
	clockA.advance(t, 3*2*time.Second)
	clockA.advance(t, 0) // taken only once the first tick's re-check is done
	select {
	case p := <-chA:
		t.Fatalf("a changed view at exactly three periods: %+v", p)
	case <-time.After(100 * time.Millisecond):
	}
	clockA.advance(t, time.Millisecond)
	recvUntil(t, chA, "a drops stale b", peers())

	// b speaks again: fresh by receive time, back in a's view.
	if err := pb.Publish(ctx, report(3, 1)); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, chA, "b back", peers("side-b"))

	// Close removes the record at once.
	if err := pb.Close(ctx); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, chA, "b closed", peers())
	if err := pb.Publish(ctx, report(4, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
}

func TestPublisherRewritesAfterExternalRevoke(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	admin := newClient(t, srv.Endpoints())
	p := newPublisher(t, c, "side-a", MinPublisherLeaseTTL)
	if err := p.Publish(context.Background(), report(1, 1)); err != nil {
		t.Fatal(err)
	}
	first := p.key.leaseID()
	if first == 0 {
		t.Fatal("no lease after Publish")
	}
	if _, err := admin.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	// The keep-alive notices the lease is gone; a new lease is granted and
	// the record rewritten without another Publish.
	eventually(t, "record rewritten on a new lease", func() bool {
		resp, err := admin.Get(context.Background(), loadPrefix+"side-a")
		return err == nil && len(resp.Kvs) == 1 && resp.Kvs[0].Lease != 0 && clientv3.LeaseID(resp.Kvs[0].Lease) != first
	})

	// Revoked again, and this time a Publish comes first: it re-grants at once.
	second := p.key.leaseID()
	if _, err := admin.Revoke(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), report(2, 1)); err != nil {
		t.Fatalf("Publish after revoke: %v", err)
	}
	resp, err := admin.Get(context.Background(), loadPrefix+"side-a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("record after re-grant: %v, %v", resp, err)
	}
	if got, err := discovery.DecodeLoadReport("side-a", resp.Kvs[0].Value); err != nil || got.Seq != 2 {
		t.Fatalf("record = %+v, %v; want seq 2", got, err)
	}
}

func TestPublishRejectsBadReports(t *testing.T) {
	srv := startServer(t, "", "")
	p := newPublisher(t, newClient(t, srv.Endpoints()), "side-a", 0)
	ctx := context.Background()
	other := report(1, 1)
	other.SidecarID = "side-b"
	noPeriod := report(1, 1)
	noPeriod.PeriodMillis = 0
	for name, r := range map[string]discovery.LoadReport{"other id": other, "no period": noPeriod} {
		if err := p.Publish(ctx, r); !errors.Is(err, ErrInvalidValue) {
			t.Errorf("%s: Publish = %v, want ErrInvalidValue", name, err)
		}
	}
}

func TestLoadSourceSkipsInvalidRecords(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	for k, v := range map[string]string{
		"side-b": `{"sidecar_id":"side-b","seq":1,"period_ms":1000,"instances":[]}`,
		"side-c": `{"sidecar_id":"someone-else","period_ms":1000}`,
		"side-d": `not json`,
	} {
		if _, err := c.Put(context.Background(), loadPrefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	l, ch := watchLoad(t, c, "side-a", newFakeClock())
	recvUntil(t, ch, "valid peer only", peers("side-b"))
	if got := l.InvalidValues(); got != 2 {
		t.Fatalf("InvalidValues = %d, want 2", got)
	}
}
