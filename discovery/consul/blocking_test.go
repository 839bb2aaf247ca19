package consul

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

const healthPath = "/v1/health/service/llm"

// step answers one request of a script.
type step func(f *fakeConsul, w http.ResponseWriter, r *http.Request)

// script makes the fake answer the requests to path with steps, one each,
// in order; later requests fall through to the fake's own handling.
func script(f *fakeConsul, path string, steps ...step) {
	var mu sync.Mutex
	n := 0
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		mu.Lock()
		i := n
		n++
		mu.Unlock()
		if i >= len(steps) {
			return false
		}
		steps[i](f, w, r)
		return true
	})
}

// answer is a step that returns entries for ids with index and the given
// LastContact, at once.
func answer(index uint64, lastContact time.Duration, ids ...string) step {
	return func(f *fakeConsul, w http.ResponseWriter, r *http.Request) {
		entries := []*api.ServiceEntry{}
		for _, id := range ids {
			entries = append(entries, entry(id, nil))
		}
		f.answer(w, entries, index, true, lastContact, true)
	}
}

// fail is a step that answers status with body, as Consul does for errors
// ("No cluster leader" is a 500).
func fail(status int, body string) step {
	return func(_ *fakeConsul, w http.ResponseWriter, _ *http.Request) { http.Error(w, body, status) }
}

// gated is a step that runs s once gate is closed (or gives up with the
// client or the fake).
func gated(gate <-chan struct{}, s step) step {
	return func(f *fakeConsul, w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
			s(f, w, r)
		case <-r.Context().Done():
		case <-f.done:
		}
	}
}

// hang is a step that never answers: a half-dead connection. It returns
// when the client gives up (closed reports when) or the fake closes.
func hang(closed chan<- time.Time) step {
	return func(f *fakeConsul, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			closed <- time.Now()
		case <-f.done:
		}
	}
}

// dropConn is a step that starts an answer and closes the connection in
// the middle of its body, as an agent that dies does. (A connection closed
// before any byte would be retried once by net/http on its own.)
func dropConn() step {
	return func(_ *fakeConsul, w http.ResponseWriter, _ *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			panic(err)
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nX-Consul-Index: 99\r\nX-Consul-LastContact: 0\r\nContent-Length: 1000\r\n\r\n[{\"Node\":")
		buf.Flush()
		conn.Close()
	}
}

// after is a step that waits d (unless the client gives up), then runs s.
func after(d time.Duration, s step) step {
	return func(f *fakeConsul, w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
			s(f, w, r)
		case <-r.Context().Done():
		}
	}
}

// watch starts s.Watch and returns its channel; the watch stops (and its
// channel drains) when the test ends.
func watch(t testing.TB, s *Source) <-chan discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := s.Watch(ctx)
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	return ch
}

func newSource(t testing.TB, cfg Config) *Source {
	t.Helper()
	s, err := NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ids(s discovery.Snapshot) []string {
	out := []string{}
	for _, in := range s.Instances {
		out = append(out, in.ID)
	}
	return out
}

func hasIDs(want ...string) func(discovery.Snapshot) bool {
	if want == nil {
		want = []string{}
	}
	return func(s discovery.Snapshot) bool { return slices.Equal(ids(s), want) }
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name      string
		sent, got uint64
		want      uint64
	}{
		{"first read", 0, 10, 10},
		{"unchanged: the wait ran out", 10, 10, 10},
		{"moved forward", 10, 12, 12},
		{"went backwards: restart with a non-blocking read", 12, 7, 0},
		{"went backwards to zero", 7, 0, 0},
		{"zero after a non-blocking read: never block on 0", 0, 0, 1},
		{"from one", 1, 4, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextIndex(tt.sent, tt.got); got != tt.want {
				t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.sent, tt.got, got, tt.want)
			}
		})
	}
}

// TestBlockingIndexSequence drives the loop through unchanged, backwards and
// zero indexes and checks the exact index of every request, and that only
// answers with a new index are looked at.
func TestBlockingIndexSequence(t *testing.T) {
	f := newFakeConsul(t)
	held := make(chan time.Time, 1)
	// The gates hold an answer until the test has seen the view before it:
	// views coalesce, so a slow reader could otherwise miss one.
	sawAB, sawA := make(chan struct{}), make(chan struct{})
	script(f, healthPath,
		answer(10, 0, "a"),
		answer(10, 0, "a"), // unchanged index: confirms the view, sends nothing new
		answer(12, 0, "a", "b"),
		gated(sawAB, answer(7, 0, "a")), // backwards
		answer(7, 0, "a"),
		gated(sawA, answer(0, 0, "a")), // backwards to zero
		answer(0, 0, "a"),              // zero
		answer(4, 0, "a", "b"),
		hang(held),
	)
	ch := watch(t, newSource(t, testConfig(f)))
	next(t, ch, "[a]", hasIDs("a"))
	next(t, ch, "[a b]", hasIDs("a", "b"))
	close(sawAB)
	next(t, ch, "[a] after the index went backwards", hasIDs("a"))
	close(sawA)
	next(t, ch, "[a b] after the zero index", hasIDs("a", "b"))
	eventually(t, "the ninth request", func() bool { return len(f.indexesSent(healthPath)) >= 9 })
	want := []string{"0", "10", "10", "12", "0", "7", "0", "1", "4"}
	if diff := cmp.Diff(want, f.indexesSent(healthPath)[:9]); diff != "" {
		t.Errorf("indexes sent (-want +got):\n%s", diff)
	}
	for i, r := range f.requestsTo(http.MethodGet, healthPath)[:9] {
		if _, ok := r.query["passing"]; !ok {
			t.Errorf("request %d: no passing filter: %v", i, r.query)
		}
		if _, ok := r.query["stale"]; !ok {
			t.Errorf("request %d: stale reads not allowed: %v", i, r.query)
		}
		if hasIndex := r.query.Has("index"); hasIndex != r.query.Has("wait") {
			t.Errorf("request %d: index and wait go together: %v", i, r.query)
		}
	}
	quiet(t, ch, 50*time.Millisecond, "no snapshot for unchanged content")
}

// TestBlockingNeverSpins counts the requests over a window against a server
// that answers every query at once: the token bucket, not the server, must
// set the pace.
func TestBlockingNeverSpins(t *testing.T) {
	const (
		interval = 20 * time.Millisecond
		burst    = 2
		window   = 400 * time.Millisecond
	)
	tests := []struct {
		name   string
		answer func(n uint64) step
	}{
		{"index moves on every answer", func(n uint64) step { return answer(n+1, 0, "a") }},
		{"index always the same", func(uint64) step { return answer(5, 0, "a") }},
		{"index always zero", func(uint64) step { return answer(0, 0, "a") }},
		{"no cluster leader", func(uint64) step { return fail(http.StatusInternalServerError, "No cluster leader") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeConsul(t)
			var n uint64
			var mu sync.Mutex
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				n++
				s := tt.answer(n)
				mu.Unlock()
				s(f, w, r)
				return true
			})
			cfg := testConfig(f)
			cfg.QueryInterval, cfg.QueryBurst = interval, burst
			cfg.InitialBackoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond // leave pacing to the bucket
			s := newSource(t, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			start := time.Now()
			ch := s.Watch(ctx)
			go func() {
				for range ch {
				}
			}()
			// Sleeping is the measurement here: a rate over a window.
			time.Sleep(window)
			cancel()
			for range ch {
			}
			// The bucket allows burst + elapsed/interval; one more for
			// rounding. Elapsed, not window: the sleep may overshoot.
			maxRequests := burst + int(time.Since(start)/interval) + 1
			got := int(s.Queries())
			t.Logf("%d requests in %v (at most %d allowed)", got, window, maxRequests)
			if got > maxRequests {
				t.Errorf("%d requests in %v; the bucket allows at most %d", got, window, maxRequests)
			}
			if got < 3 {
				t.Errorf("%d requests in %v: the loop stalled", got, window)
			}
		})
	}
}

// TestBlockingDeadline: a request that hangs is abandoned after wait +
// wait/16 + RequestTimeout, not before wait + wait/16 (Consul may hold it
// that long), and the loop reads afresh, then blocks again.
func TestBlockingDeadline(t *testing.T) {
	f := newFakeConsul(t)
	held := make(chan time.Time, 1)
	var started time.Time
	cfg := testConfig(f)
	cfg.WaitTime, cfg.RequestTimeout = 320*time.Millisecond, 100*time.Millisecond
	script(f, healthPath,
		answer(3, 0, "a"),
		func(f *fakeConsul, w http.ResponseWriter, r *http.Request) { started = time.Now(); hang(held)(f, w, r) },
		answer(3, 0, "a"), // the fresh read after the failure
		// Consul's jitter: an answer just before wait + wait/16 is no error.
		after(cfg.WaitTime+cfg.WaitTime/16-10*time.Millisecond, answer(3, 0, "a")),
		answer(4, 0, "a", "b"),
	)
	s := newSource(t, cfg)
	ch := watch(t, s)
	next(t, ch, "[a]", hasIDs("a"))
	var gaveUp time.Time
	select {
	case gaveUp = <-held:
	case <-time.After(waitFor):
		t.Fatal("the hanging request was never abandoned")
	}
	held2 := gaveUp.Sub(started)
	if lo := cfg.WaitTime + cfg.WaitTime/16; held2 < lo {
		t.Errorf("request abandoned after %v, before wait + wait/16 = %v", held2, lo)
	}
	if hi := cfg.WaitTime + cfg.WaitTime/16 + cfg.RequestTimeout + time.Second; held2 > hi {
		t.Errorf("request held %v, want about %v", held2, cfg.WaitTime+cfg.WaitTime/16+cfg.RequestTimeout)
	}
	next(t, ch, "[a b]", hasIDs("a", "b"))
	if diff := cmp.Diff([]string{"0", "3", "0", "3", "3"}, f.indexesSent(healthPath)[:5]); diff != "" {
		t.Errorf("indexes sent (-want +got):\n%s", diff)
	}
	if got := s.stats.errors.Load(); got != 1 {
		t.Errorf("errors = %d, want 1 (the hang; the slow answer within the jitter is not one)", got)
	}
}

// TestBlockingErrorsKeepTheLastView: 500s, "No cluster leader", a dropped
// connection and a restarted agent whose index went backwards never replace
// the last good snapshot with anything but a real answer.
func TestBlockingErrorsKeepTheLastView(t *testing.T) {
	f := newFakeConsul(t)
	script(f, healthPath,
		answer(50, 0, "a"),
		fail(http.StatusInternalServerError, "No cluster leader"),
		fail(http.StatusInternalServerError, "rpc error making call: EOF"),
		dropConn(),
		fail(http.StatusServiceUnavailable, "agent starting"),
		answer(2, 0, "a", "b"), // the agent came back with a younger index
	)
	s := newSource(t, testConfig(f))
	ch := watch(t, s)
	next(t, ch, "[a]", hasIDs("a"))
	got := next(t, ch, "the next snapshot", func(discovery.Snapshot) bool { return true })
	if !hasIDs("a", "b")(got) {
		t.Fatalf("after errors got %v, want [a b]: nothing in between", ids(got))
	}
	eventually(t, "the seventh request", func() bool { return len(f.indexesSent(healthPath)) >= 7 })
	if diff := cmp.Diff([]string{"0", "50", "0", "0", "0", "0", "2"}, f.indexesSent(healthPath)[:7]); diff != "" {
		t.Errorf("indexes sent (-want +got):\n%s", diff)
	}
	if got := s.stats.errors.Load(); got != 4 {
		t.Errorf("errors = %d, want 4", got)
	}
}

// TestBlockingStaleAnswerDropped: an answer from a server that has not
// heard from the leader for longer than MaxStale is dropped and the query
// repeated in consistent mode; the next one is stale again.
func TestBlockingStaleAnswerDropped(t *testing.T) {
	f := newFakeConsul(t)
	f.putService(api.AgentService{ID: "b", Service: "llm", Address: "10.0.0.6", Port: 8000, Tags: []string{"model=m"}}, api.HealthPassing)
	script(f, healthPath, answer(90, 11*time.Second, "a-old"))
	cfg := testConfig(f)
	cfg.MaxStale = 10 * time.Second
	s := newSource(t, cfg)
	ch := watch(t, s)
	got := next(t, ch, "the first snapshot", func(discovery.Snapshot) bool { return true })
	if !hasIDs("b")(got) {
		t.Fatalf("first snapshot %v, want [b]: the stale answer must be dropped", ids(got))
	}
	eventually(t, "the third request", func() bool { return len(f.requestsTo(http.MethodGet, healthPath)) >= 3 })
	reqs := f.requestsTo(http.MethodGet, healthPath)
	for i, want := range []struct {
		stale, consistent bool
		index             string
	}{{true, false, ""}, {false, true, ""}, {true, false, strconv.FormatUint(f.healthIndexNow(), 10)}} {
		q := reqs[i].query
		if q.Has("stale") != want.stale || q.Has("consistent") != want.consistent || q.Get("index") != want.index {
			t.Errorf("request %d: %v, want stale=%v consistent=%v index=%q", i, q, want.stale, want.consistent, want.index)
		}
	}
	if s.StaleResponses() != 1 {
		t.Errorf("StaleResponses = %d, want 1", s.StaleResponses())
	}
}

func (f *fakeConsul) healthIndexNow() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.healthIndex
}
