package etcd

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const instPrefix = "/blitzscale/services/llm/instances/"

func putInstance(t testing.TB, c *clientv3.Client, in discovery.Instance, opts ...clientv3.OpOption) {
	t.Helper()
	v, err := discovery.EncodeInstance(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(context.Background(), instPrefix+in.ID, string(v), opts...); err != nil {
		t.Fatalf("put %s: %v", in.ID, err)
	}
}

func inst(id string) discovery.Instance {
	return discovery.Instance{ID: id, Address: "10.0.0.1:8000", Models: []string{"m"}}
}

func ids(s discovery.Snapshot) []string {
	out := make([]string, 0, len(s.Instances))
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

func hasIDs(want ...string) func(discovery.Snapshot) bool {
	return func(s discovery.Snapshot) bool { return slices.Equal(ids(s), want) }
}

func watchSource(t testing.TB, cfg Config) (*Source, <-chan discovery.Snapshot) {
	t.Helper()
	s, ch, _ := watchSourceStop(t, cfg)
	return s, ch
}

// watchSourceStop also returns a stop function that cancels the watch and
// waits for its channel to close; it runs at cleanup too.
func watchSourceStop(t testing.TB, cfg Config) (*Source, <-chan discovery.Snapshot, func()) {
	t.Helper()
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for range ch { // wait for the watcher to finish
			}
		})
	}
	t.Cleanup(stop)
	return s, ch, stop
}

func TestSourceSyncAddUpdateDelete(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	putInstance(t, c, inst("a"))
	putInstance(t, c, inst("b"))
	// A key outside the prefix must not leak in.
	if _, err := c.Put(context.Background(), "/blitzscale/services/other/instances/x", "{}"); err != nil {
		t.Fatal(err)
	}

	_, ch := watchSource(t, testConfig(c, nil))
	first := recvUntil(t, ch, "initial sync", func(discovery.Snapshot) bool { return true })
	if got := ids(first); !slices.Equal(got, []string{"a", "b"}) || first.Source != "etcd" || first.SyncedAt.IsZero() {
		t.Fatalf("first snapshot = %v (source %q, synced %v), want [a b] from etcd", got, first.Source, first.SyncedAt)
	}

	putInstance(t, c, inst("c"))
	recvUntil(t, ch, "add c", hasIDs("a", "b", "c"))

	upd := inst("b")
	upd.Draining = true
	putInstance(t, c, upd)
	recvUntil(t, ch, "b draining", func(s discovery.Snapshot) bool {
		return len(s.Instances) == 3 && s.Instances[1].Draining
	})

	if _, err := c.Delete(context.Background(), instPrefix+"a"); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, ch, "delete a", hasIDs("b", "c"))
}

func TestSourceLeaseExpiryRemovesInstance(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	_, ch := watchSource(t, testConfig(c, nil))
	recvUntil(t, ch, "empty sync", hasIDs())

	lease, err := c.Grant(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	putInstance(t, c, inst("short"), clientv3.WithLease(lease.ID))
	recvUntil(t, ch, "leased instance", hasIDs("short"))
	// Nobody keeps the lease alive: etcd expires it and deletes the key.
	recvUntil(t, ch, "lease expiry", hasIDs())
}

func TestSourceSkipsAndCountsInvalidValues(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	putInstance(t, c, inst("good"))
	bad := map[string]string{
		"garbage":  "{not json",
		"mismatch": `{"id":"other","address":"10.0.0.1:8000","models":["m"]}`,
		"nomodels": `{"id":"nomodels","address":"10.0.0.1:8000","models":[]}`,
	}
	for k, v := range bad {
		if _, err := c.Put(context.Background(), instPrefix+k, v); err != nil {
			t.Fatal(err)
		}
	}
	var logs logBuffer
	s, ch := watchSource(t, testConfig(c, logs.logger()))
	recvUntil(t, ch, "only the good instance", hasIDs("good"))
	if got := s.InvalidValues(); got != 3 {
		t.Fatalf("InvalidValues = %d, want 3", got)
	}
	if got := logs.count("skipping invalid instance value"); got != 3 {
		t.Fatalf("logged %d invalid values, want 3 (once per key and revision)", got)
	}

	// Fixing a bad value makes it appear; the rest stays.
	putInstance(t, c, inst("garbage"))
	recvUntil(t, ch, "fixed value", hasIDs("garbage", "good"))
	// Breaking a good value removes only that one and is counted again.
	if _, err := c.Put(context.Background(), instPrefix+"good", "[]"); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, ch, "broken good", hasIDs("garbage"))
	if got := s.InvalidValues(); got != 4 {
		t.Fatalf("InvalidValues = %d, want 4", got)
	}
}

// Regression: a watcher that falls behind a compaction must re-read, not
// skip ahead from the compact revision and lose what changed meanwhile.
func TestSourceCompactionWhileDisconnected(t *testing.T) {
	srv := startServer(t, "", "")
	direct := newClient(t, srv.Endpoints())
	px := newProxy(t, srv.Endpoints()[0])
	viaProxy := newClient(t, []string{px.endpoint()})

	putInstance(t, direct, inst("a"))
	var logs logBuffer
	s, ch := watchSource(t, testConfig(viaProxy, logs.logger()))
	recvUntil(t, ch, "initial", hasIDs("a"))

	px.block()
	putInstance(t, direct, inst("b"))
	if _, err := direct.Delete(context.Background(), instPrefix+"a"); err != nil {
		t.Fatal(err)
	}
	resp, err := direct.Put(context.Background(), instPrefix+"c", mustEncode(t, inst("c")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	px.unblock()

	recvUntil(t, ch, "state after compaction", hasIDs("b", "c"))
	// The events may arrive before the compaction error does (the proxy
	// had some in flight), so the re-read can follow the snapshot.
	eventually(t, "the watcher to see the compaction and re-read", func() bool {
		return logs.count("watch compacted") > 0 && s.Resyncs() > 0
	})
	// The watch goes on after the re-read: no update is lost afterwards.
	putInstance(t, direct, inst("d"))
	recvUntil(t, ch, "write after compaction", hasIDs("b", "c", "d"))
}

// Regression: a stream that goes silent without an error (half-open
// connection, stuck server stream) must not freeze the view for good.
func TestSourceReestablishesASilentWatch(t *testing.T) {
	srv := startServer(t, "", "")
	direct := newClient(t, srv.Endpoints())
	px := newProxy(t, srv.Endpoints()[0])
	viaProxy := newClient(t, []string{px.endpoint()})
	putInstance(t, direct, inst("a"))
	var logs logBuffer
	cfg := testConfig(viaProxy, logs.logger())
	cfg.WatchProgressInterval, cfg.RequestTimeout = 100*time.Millisecond, 300*time.Millisecond
	_, ch := watchSource(t, cfg)
	recvUntil(t, ch, "initial", hasIDs("a"))
	// An event proves the watch stream is set up before the path freezes.
	putInstance(t, direct, inst("a0"))
	recvUntil(t, ch, "watch live", hasIDs("a", "a0"))

	px.freeze()
	putInstance(t, direct, inst("b"))
	eventually(t, "stall detected", func() bool { return logs.count("no answer to a progress request") > 0 })

	px.thaw()
	recvUntil(t, ch, "view after the stall", hasIDs("a", "a0", "b"))
}

func TestSourceKeepsViewWhileEtcdDownAndResyncs(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, "")
	endpoint := srv.Endpoints()[0]
	c := newClient(t, []string{endpoint})
	putInstance(t, c, inst("a"))
	_, ch, stop := watchSourceStop(t, testConfig(c, nil))
	recvUntil(t, ch, "initial", hasIDs("a"))

	// Close may take etcd's request timeout (about 5s) when it waits for
	// the open watch stream; the test tolerates it.
	srv.Close()
	// While etcd is down the source sends nothing: the consumer keeps [a].
	// A short, bounded look is enough to catch a source that sends an
	// empty or partial view on error.
	select {
	case s := <-ch:
		t.Fatalf("snapshot %v sent while etcd was down", ids(s))
	case <-time.After(300 * time.Millisecond):
	}

	srv2 := startServer(t, dir, endpoint)
	if got := srv2.Endpoints()[0]; got != endpoint {
		t.Fatalf("restarted on %s, want %s", got, endpoint)
	}
	putInstance(t, c, inst("b"))
	recvUntil(t, ch, "resync after restart", hasIDs("a", "b"))
	// End the watch before srv2's cleanup: etcd's Close waits up to its
	// request timeout (about 5s) for open streams.
	stop()
}

func TestSourceStopsOnCancel(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	s, err := NewSource(testConfig(c, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	recvUntil(t, ch, "initial", hasIDs())
	cancel()
	eventually(t, "channel closed", func() bool {
		select {
		case _, open := <-ch:
			return !open
		default:
			return false
		}
	})
}

func mustEncode(t testing.TB, in discovery.Instance) string {
	t.Helper()
	v, err := discovery.EncodeInstance(in)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

func TestDecodeInstanceValue(t *testing.T) {
	tests := []struct {
		name, key, value string
		wantErr          bool
	}{
		{"valid", "a", `{"id":"a","address":"h:1","models":["m"]}`, false},
		{"unknown fields ignored", "a", `{"id":"a","address":"h:1","models":["m"],"future":1}`, false},
		{"id differs from key", "b", `{"id":"a","address":"h:1","models":["m"]}`, true},
		{"nested key", "x/a", `{"id":"a","address":"h:1","models":["m"]}`, true},
		{"not json", "a", `nope`, true},
		{"missing address", "a", `{"id":"a","models":["m"]}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := decodeInstanceValue(tt.key, []byte(tt.value))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("err = %v, want ErrInvalidValue", err)
			}
			if err == nil && in.ID != tt.key {
				t.Fatalf("id = %q, want %q", in.ID, tt.key)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	c := &clientv3.Client{}
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{Client: c}, false},
		{"no client", Config{}, true},
		{"trailing slash", Config{Client: c, Prefix: "/x/"}, true},
		{"service with slash", Config{Client: c, Service: "a/b"}, true},
		{"max below initial", Config{Client: c, InitialBackoff: time.Second, MaxBackoff: time.Millisecond}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Fatalf("Validate = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

// TestSourceConfirmsAQuietView: with nothing changing, the watch's progress
// notifications confirm the view, and the source re-sends it with a later
// SyncedAt, so a consumer can tell a quiet registry from a lost one. (The
// interval leaves the new watch time to sync before its first progress
// request: etcd ignores requests on a stream with an unsynced watcher.)
func TestSourceConfirmsAQuietView(t *testing.T) {
	srv := startServer(t, "", "")
	c := newClient(t, srv.Endpoints())
	putInstance(t, c, inst("a"))
	var logs logBuffer
	cfg := testConfig(c, logs.logger())
	cfg.WatchProgressInterval = 600 * time.Millisecond
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.confirm = 500 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	first := recvUntil(t, ch, "initial", hasIDs("a"))
	again := recvUntil(t, ch, "the view confirmed", func(s discovery.Snapshot) bool { return s.SyncedAt.After(first.SyncedAt) })
	if !slices.Equal(ids(again), []string{"a"}) {
		t.Errorf("confirmed view %v, want [a]", ids(again))
	}
	if n := logs.count("registry error"); n != 0 {
		t.Errorf("%d watch failures: the view was re-read, not confirmed by progress notifications", n)
	}
}
