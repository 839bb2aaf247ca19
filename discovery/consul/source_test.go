package consul

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

func svc(id string, tags ...string) api.AgentService {
	if len(tags) == 0 {
		tags = []string{"model=m"}
	}
	return api.AgentService{ID: id, Service: "llm", Address: "10.0.0.5", Port: 8000, Tags: tags}
}

func TestSourceFollowsTheCatalog(t *testing.T) {
	f := newFakeConsul(t)
	f.putService(svc("a"), api.HealthPassing)
	other := svc("x")
	other.Service = "other" // another service must not leak in
	f.putService(other, api.HealthPassing)
	s := newSource(t, testConfig(f))
	ch := watch(t, s)

	first := next(t, ch, "[a]", hasIDs("a"))
	if first.Source != SourceName || first.SyncedAt.IsZero() {
		t.Errorf("snapshot source %q synced %v", first.Source, first.SyncedAt)
	}
	f.putService(svc("b", "model=m", "model=n"), api.HealthPassing)
	snap := next(t, ch, "[a b]", hasIDs("a", "b"))
	if diff := cmp.Diff([]string{"m", "n"}, snap.Instances[1].Models); diff != "" {
		t.Errorf("b's models (-want +got):\n%s", diff)
	}

	// Meta changes show; draining=true marks draining.
	b := svc("b", "model=m", "model=n")
	b.Meta = map[string]string{"engine": "vllm", "draining": "true"}
	f.putService(b, api.HealthPassing)
	snap = next(t, ch, "b draining", func(s discovery.Snapshot) bool { return len(s.Instances) == 2 && s.Instances[1].Draining })
	if diff := cmp.Diff(map[string]string{"engine": "vllm"}, snap.Instances[1].Meta); diff != "" {
		t.Errorf("b's meta (-want +got):\n%s", diff)
	}

	// A critical or warning check takes an instance out; passing brings it back.
	f.setCheck("service:a", api.HealthCritical)
	next(t, ch, "a critical: [b]", hasIDs("b"))
	f.setCheck("service:a", api.HealthWarning)
	quiet(t, ch, 30*time.Millisecond, "warning is not passing either")
	f.setCheck("service:a", api.HealthPassing)
	next(t, ch, "a passing: [a b]", hasIDs("a", "b"))

	// Maintenance mode: with ?passing the instance leaves routing at once.
	enableMaintenance(t, f, "a")
	next(t, ch, "a in maintenance: [b]", hasIDs("b"))

	f.removeService("b")
	next(t, ch, "b deregistered: []", hasIDs())
}

func enableMaintenance(t testing.TB, f *fakeConsul, id string) {
	t.Helper()
	if err := f.client().Agent().EnableServiceMaintenance(id, "test"); err != nil {
		t.Fatal(err)
	}
}

// TestSourceInvalidEntriesLoggedOnce: an invalid entry is skipped, logged
// and counted once however many answers carry it, and again only when its
// problem changes.
func TestSourceInvalidEntriesLoggedOnce(t *testing.T) {
	f := newFakeConsul(t)
	var logs logBuffer
	cfg := testConfig(f)
	cfg.Logger = logs.logger()
	f.putService(svc("a"), api.HealthPassing)
	f.putService(svc("bad", "no-model-tag"), api.HealthPassing)
	s := newSource(t, cfg)
	ch := watch(t, s)
	next(t, ch, "[a]", hasIDs("a"))
	for _, id := range []string{"c", "d"} {
		f.putService(svc(id), api.HealthPassing)
		next(t, ch, "another instance", func(s discovery.Snapshot) bool { return s.Instances[len(s.Instances)-1].ID == id })
	}
	if got := s.InvalidValues(); got != 1 {
		t.Errorf("InvalidValues = %d after three answers, want 1", got)
	}
	bad := svc("bad", "model=")
	f.putService(bad, api.HealthPassing) // a different problem
	eventually(t, "the new problem logged", func() bool { return s.InvalidValues() == 2 })
	if n := logs.count("skipping invalid service entry"); n != 2 {
		t.Errorf("logged %d times, want 2", n)
	}
}

// TestSourceKeepsViewThroughAnAgentRestart: while the agent is down nothing
// is sent; a restarted dev agent comes back with other data at the very
// index the Source last saw (regression: blocking on that index again
// would have held the old view until the index moved), and the Source
// follows it from a fresh read.
func TestSourceKeepsViewThroughAnAgentRestart(t *testing.T) {
	f := newFakeConsul(t)
	f.putService(svc("a"), api.HealthPassing)
	f.putService(svc("b"), api.HealthPassing)
	s := newSource(t, testConfig(f))
	ch := watch(t, s)
	next(t, ch, "[a b]", hasIDs("a", "b"))

	// The agent stops answering.
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		dropConn()(f, w, r)
		return true
	})
	before := s.stats.errors.Load()
	eventually(t, "three failed queries", func() bool { return s.stats.errors.Load() >= before+3 })
	quiet(t, ch, 20*time.Millisecond, "the last view is kept while the agent is down")

	// It comes back with no state and a smaller index.
	sentBefore := len(f.indexesSent(healthPath))
	f.mu.Lock()
	f.resetLocked(2)
	f.mu.Unlock()
	f.putService(svc("a"), api.HealthPassing)
	f.setHook(nil)
	next(t, ch, "[a] from the restarted agent", hasIDs("a"))
	eventually(t, "a blocking query on the new index", func() bool {
		sent := f.indexesSent(healthPath)[sentBefore:]
		return len(sent) >= 2 && sent[len(sent)-1] == "3"
	})
}

func TestSourceWatchStopsWithItsContext(t *testing.T) {
	f := newFakeConsul(t)
	s := newSource(t, testConfig(f))
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	next(t, ch, "the first (empty) snapshot", hasIDs())
	// The next query is held by the fake until something changes.
	eventually(t, "a held query", func() bool { return len(f.indexesSent(healthPath)) >= 2 })
	cancel()
	select {
	case _, ok := <-ch:
		if ok {
			for range ch {
			}
		}
	case <-time.After(waitFor):
		t.Fatal("Watch did not close its channel after cancel")
	}
}

func TestNewSourceRejectsBadConfig(t *testing.T) {
	if _, err := NewSource(Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewSource without Client: %v, want ErrInvalidConfig", err)
	}
}

// TestSourceConfirmsAQuietView: a blocking query whose wait runs out with
// the index unchanged confirms the view, and the source re-sends it with a
// later SyncedAt.
func TestSourceConfirmsAQuietView(t *testing.T) {
	f := newFakeConsul(t)
	f.putService(svc("a"), api.HealthPassing)
	cfg := testConfig(f)
	cfg.WaitTime = 100 * time.Millisecond
	s := newSource(t, cfg)
	s.confirm = 150 * time.Millisecond
	ch := watch(t, s)
	first := next(t, ch, "[a]", hasIDs("a"))
	again := next(t, ch, "the view confirmed", func(s discovery.Snapshot) bool { return s.SyncedAt.After(first.SyncedAt) })
	if diff := cmp.Diff([]string{"a"}, ids(again)); diff != "" {
		t.Errorf("confirmed view (-want +got):\n%s", diff)
	}
}
