package breaker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestSet builds a Set over ids (addresses are placeholders unless
// overwritten by a later Sync) and fails the test on a bad config.
func newTestSet(t testing.TB, cfg Config, ids ...string) *Set {
	t.Helper()
	s, err := NewSet(cfg)
	if err != nil {
		t.Fatalf("NewSet: %v", err)
	}
	ins := make([]discovery.Instance, len(ids))
	for i, id := range ids {
		ins[i] = discovery.Instance{ID: id, Address: "127.0.0.1:1"}
	}
	s.Sync(ins)
	return s
}

// feed admits and completes one request per outcome on id, failing the test
// if any is rejected.
func feed(t *testing.T, s *Set, id string, outcomes ...Outcome) {
	t.Helper()
	for i, o := range outcomes {
		done, err := s.Allow(id)
		if err != nil {
			t.Fatalf("Allow #%d (%v): %v", i, o, err)
		}
		done(o)
	}
}

// waitFor polls cond until it holds or the deadline passes: tests never sleep
// to wait for a state.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recorder collects OnStateChange calls.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) hook(id string, from, to State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%s:%v->%v", id, from, to))
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}
