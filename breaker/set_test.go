package breaker

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
)

const (
	S = Success
	F = Failure
	O = Overload
	I = Ignored
)

func repeat(o Outcome, n int) []Outcome { return slices.Repeat([]Outcome{o}, n) }

func seq(parts ...[]Outcome) []Outcome { return slices.Concat(parts...) }

func TestTrip(t *testing.T) {
	// The ratio rule is off in the consecutive cases (MinRequests too high)
	// and the consecutive rule is off in the ratio cases (too many needed).
	consec := Config{ConsecutiveFailures: 3, MinRequests: 1000}
	ratio := Config{ConsecutiveFailures: 1000, FailureRatio: 0.5, MinRequests: 10}
	tests := []struct {
		name     string
		cfg      Config
		outcomes []Outcome
		want     State
	}{
		{"consecutive: two failures stay closed", consec, seq(repeat(F, 2)), Closed},
		{"consecutive: third failure trips", consec, seq(repeat(F, 3)), Open},
		{"consecutive: overload counts as failure", consec, []Outcome{F, O, O}, Open},
		{"consecutive: a success resets the run", consec, []Outcome{F, F, S, F, F}, Closed},
		{"consecutive: ignored neither breaks nor extends the run", consec, []Outcome{F, F, I, I, F}, Open},
		{"consecutive: out-of-range outcome counts as failure", consec, []Outcome{F, F, Outcome(42)}, Open},
		{"ratio: below MinRequests never trips", ratio, seq(repeat(F, 1), []Outcome{S, F, S, F, S, F, S, F}), Closed},
		{"ratio: at MinRequests and at the ratio trips", ratio, seq(repeat(S, 5), repeat(F, 5)), Open},
		{"ratio: below the ratio stays closed", ratio, seq(repeat(S, 6), repeat(F, 4)), Closed},
		{"ratio: only counted outcomes reach MinRequests", ratio, seq(repeat(S, 4), repeat(I, 50), repeat(F, 5)), Closed},
		{"ratio: ignored does not dilute", ratio, seq(repeat(S, 5), repeat(I, 100), repeat(F, 5)), Open},
		{"ignored never trips", Config{ConsecutiveFailures: 1, MinRequests: 1}, repeat(I, 500), Closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSet(t, tt.cfg, "a")
			feed(t, s, "a", tt.outcomes...)
			if got := s.State("a"); got != tt.want {
				t.Errorf("State = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	s := newTestSet(t, Config{ConsecutiveFailures: 1, CoolDown: time.Hour}, "a", "b")
	feed(t, s, "a", F)
	done, err := s.Allow("a")
	if !errors.Is(err, ErrOpen) || done != nil {
		t.Fatalf("Allow(open) = (%v, %v), want (nil, ErrOpen)", done != nil, err)
	}
	if _, err := s.Allow("b"); err != nil {
		t.Errorf("Allow(b) = %v: one instance's breaker must not affect another", err)
	}
	if _, err := s.Allow("unknown"); err != nil {
		t.Errorf("Allow(unknown) = %v, want allowed", err)
	}
}

func TestHalfOpenSingleTrial(t *testing.T) {
	tests := []struct {
		name  string
		trial Outcome
		want  State
	}{
		{"success closes", S, Closed},
		{"failure reopens", F, Open},
		{"overload reopens", O, Open},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSet(t, Config{ConsecutiveFailures: 1, CoolDown: 50 * time.Millisecond}, "a")
			feed(t, s, "a", F)
			waitFor(t, "half-open", func() bool { return s.State("a") == HalfOpen })

			first, err := s.Allow("a")
			if err != nil {
				t.Fatalf("first trial: %v", err)
			}
			if _, err := s.Allow("a"); !errors.Is(err, ErrHalfOpenBusy) {
				t.Fatalf("second concurrent trial: %v, want ErrHalfOpenBusy", err)
			}
			// An ignored trial (client went away) says nothing about the
			// instance and gives the slot back.
			first(I)
			if got := s.State("a"); got != HalfOpen {
				t.Fatalf("after ignored trial State = %v, want half-open", got)
			}
			trial, err := s.Allow("a")
			if err != nil {
				t.Fatalf("trial after ignored one: %v", err)
			}
			trial(tt.trial)
			if got := s.State("a"); got != tt.want {
				t.Errorf("State = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDoneTwiceIsNoop(t *testing.T) {
	s := newTestSet(t, Config{ConsecutiveFailures: 2}, "a")
	done, err := s.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	done(F)
	done(F)
	if got := s.State("a"); got != Closed {
		t.Errorf("State = %v after one request reported twice, want closed", got)
	}
}

// Regression: gobreaker drops the outcome of a request admitted in a bucket
// that has rolled out of the window, so an engine that breaks every long
// stream would never trip. Outcomes are recorded when the request ends.
func TestLongRequestStillCounts(t *testing.T) {
	s := newTestSet(t, Config{ConsecutiveFailures: 1, Window: 20 * time.Millisecond, CoolDown: time.Hour}, "a")
	start := time.Now()
	done, err := s.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the window to pass", func() bool { return time.Since(start) > 50*time.Millisecond })
	done(F)
	if got := s.State("a"); got != Open {
		t.Errorf("State = %v after a failed stream longer than the window, want open", got)
	}
}

// A request admitted before a trip reports into a finished period: its
// outcome is dropped rather than counted against the next one.
func TestOutcomeAcrossTransitionDropped(t *testing.T) {
	s := newTestSet(t, Config{ConsecutiveFailures: 1, CoolDown: 50 * time.Millisecond}, "a")
	old, err := s.Allow("a")
	if err != nil {
		t.Fatal(err)
	}
	feed(t, s, "a", F)
	waitFor(t, "half-open", func() bool { return s.State("a") == HalfOpen })
	old(F)
	if got := s.State("a"); got != HalfOpen {
		t.Errorf("State = %v, want half-open: a stale outcome must not reopen", got)
	}
}

func TestSync(t *testing.T) {
	rec := &recorder{}
	s := newTestSet(t, Config{ConsecutiveFailures: 1, CoolDown: time.Hour, OnStateChange: rec.hook}, "a", "b")
	feed(t, s, "a", F)
	feed(t, s, "b", F)
	pending, err := s.Allow("c") // unknown yet: a no-op Done
	if err != nil {
		t.Fatal(err)
	}
	pending(F)

	// Keep b (state survives), drop a, add c.
	s.Sync([]discovery.Instance{{ID: "b", Address: "h:2"}, {ID: "c", Address: "h:3"}})
	if got := s.State("b"); got != Open {
		t.Errorf("kept b: State = %v, want open", got)
	}
	if got := s.State("c"); got != Closed {
		t.Errorf("new c: State = %v, want closed", got)
	}
	if got := s.State("a"); got != Closed {
		t.Errorf("dropped a: State = %v, want closed (unknown)", got)
	}
	if _, err := s.Allow("a"); err != nil {
		t.Errorf("dropped a: Allow = %v, want allowed", err)
	}

	// A request to c outlives c: its Done is harmless and fires no hook.
	late, err := s.Allow("c")
	if err != nil {
		t.Fatal(err)
	}
	s.Sync([]discovery.Instance{{ID: "b", Address: "h:2"}})
	late(F)

	// a comes back with a fresh breaker.
	s.Sync([]discovery.Instance{{ID: "a", Address: "h:1"}, {ID: "b", Address: "h:2"}})
	if got := s.State("a"); got != Closed {
		t.Errorf("re-added a: State = %v, want closed", got)
	}
	want := []string{"a:closed->open", "b:closed->open"}
	if diff := cmp.Diff(want, rec.list()); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
}

// A hook may call back into the Set, even into the instance whose
// transition it reports.
func TestHookReentrant(t *testing.T) {
	var s *Set
	var seen atomic.Value
	s = newTestSet(t, Config{ConsecutiveFailures: 1, CoolDown: time.Hour, OnStateChange: func(id string, _, _ State) {
		seen.Store(s.State(id))
		if _, err := s.Allow(id); !errors.Is(err, ErrOpen) {
			t.Errorf("Allow from hook = %v, want ErrOpen", err)
		}
	}}, "a")
	feed(t, s, "a", F)
	if got, _ := seen.Load().(State); got != Open {
		t.Errorf("hook saw %v, want open", got)
	}
}

// Many goroutines hammer Allow/Done/State/Sync; under -race this checks the
// locking, and the hook sequence of each instance must chain (each from is
// the previous to).
func TestConcurrent(t *testing.T) {
	var mu sync.Mutex
	last := map[string]State{}
	var broken atomic.Int64
	hook := func(id string, from, to State) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := last[id]; (ok && prev != from) || (!ok && from != Closed) {
			broken.Add(1)
		}
		last[id] = to
	}
	ids := []string{"a", "b", "c"}
	s := newTestSet(t, Config{ConsecutiveFailures: 3, MinRequests: 10, CoolDown: time.Millisecond, OnStateChange: hook}, ids...)
	ins := []discovery.Instance{{ID: "a", Address: "h:1"}, {ID: "b", Address: "h:2"}, {ID: "c", Address: "h:3"}}

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 2000 {
				id := ids[(g+i)%len(ids)]
				done, err := s.Allow(id)
				if err != nil {
					if !errors.Is(err, ErrOpen) && !errors.Is(err, ErrHalfOpenBusy) {
						t.Errorf("Allow: %v", err)
					}
					continue
				}
				o := Outcome((g * i) % 4)
				// Half the Dones run on another goroutine, like a stream's.
				if i%2 == 0 {
					done(o)
				} else {
					wg.Go(func() { done(o); done(o) })
				}
				if i%100 == 0 {
					s.State(id)
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			s.Sync(ins)
		}
	})
	wg.Wait()
	if n := broken.Load(); n != 0 {
		t.Errorf("%d transitions did not chain from the previous state", n)
	}
}

// TestProbation: an engine whose health check passes while its requests
// fail must not get ConsecutiveFailures more failed requests after each
// cool-down: the first failure after a trial closed the breaker reopens it,
// until enough successes end the probation.
func TestProbation(t *testing.T) {
	tests := []struct {
		name  string
		after []Outcome
		want  State
	}{
		{"one failure on probation reopens", repeat(F, 1), Open},
		{"a few successes do not end probation", seq(repeat(S, probationSuccesses-1), repeat(F, 1)), Open},
		{"enough successes end it", seq(repeat(S, probationSuccesses), repeat(F, 1)), Closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSet(t, Config{ConsecutiveFailures: 3, CoolDown: 50 * time.Millisecond}, "a")
			feed(t, s, "a", repeat(F, 3)...)
			waitFor(t, "half-open", func() bool { return s.State("a") == HalfOpen })
			trial, err := s.Allow("a")
			if err != nil {
				t.Fatal(err)
			}
			trial(S)
			if got := s.State("a"); got != Closed {
				t.Fatalf("after the trial State = %v", got)
			}
			feed(t, s, "a", tt.after...)
			if got := s.State("a"); got != tt.want {
				t.Errorf("State = %v, want %v", got, tt.want)
			}
		})
	}
}
