package breaker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/sony/gobreaker/v2"
)

// Set holds one breaker per instance id. Allow, Done and State are safe from
// any goroutine and take no Set-wide lock: the id→breaker map is an immutable
// value swapped whole by Sync.
type Set struct {
	cfg      Config
	settings gobreaker.Settings // shared by every breaker but Name and OnStateChange
	// recordAfter is the age past which a closed-state outcome may fall out
	// of gobreaker's window before it is reported; see request.finish.
	recordAfter time.Duration

	syncMu  sync.Mutex // serialises Sync; readers never take it
	entries atomic.Pointer[map[string]*entry]
}

// NewSet validates cfg, applies its defaults and returns an empty Set; Sync
// fills it.
func NewSet(cfg Config) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	bucket := cfg.Window / windowBuckets
	// gobreaker rounds Interval up to a multiple of BucketPeriod; do the same
	// so recordAfter matches the window it really keeps.
	interval := (cfg.Window + bucket - 1) / bucket * bucket
	s := &Set{
		cfg: cfg,
		settings: gobreaker.Settings{
			// One trial at a time in half-open, and one success closes it.
			MaxRequests:  1,
			Interval:     interval,
			BucketPeriod: bucket,
			Timeout:      cfg.CoolDown,
			ReadyToTrip:  readyToTrip(cfg),
			IsSuccessful: func(err error) bool { return err == nil },
			// gobreaker counts an excluded outcome in neither
			// TotalSuccesses nor TotalFailures nor the consecutive runs, and
			// gives a half-open trial slot back.
			IsExcluded: func(err error) bool { return err == errIgnored },
		},
		// Two buckets of margin: one for gobreaker's own rounding of ages,
		// one for the gap between its clock reads and ours.
		recordAfter: interval - 2*bucket,
	}
	empty := map[string]*entry{}
	s.entries.Store(&empty)
	return s, nil
}

// readyToTrip is gobreaker's ReadyToTrip, called on each failure in the
// closed state with the window's counts. The ratio is taken over counted
// outcomes (failures plus successes), not over Counts.Requests, which also
// holds Ignored and still-running requests and would dilute it.
func readyToTrip(cfg Config) func(gobreaker.Counts) bool {
	return func(c gobreaker.Counts) bool {
		if c.ConsecutiveFailures >= cfg.ConsecutiveFailures {
			return true
		}
		n := uint64(c.TotalFailures) + uint64(c.TotalSuccesses)
		return n >= uint64(cfg.MinRequests) &&
			float64(c.TotalFailures) >= cfg.FailureRatio*float64(n)
	}
}

// Sync makes the Set hold exactly one breaker per id in instances: new ids
// get a closed breaker, known ids keep theirs (with the address updated for
// probes), and ids that are gone are dropped. A dropped breaker's
// OnStateChange calls stop; Done calls still pending on it are harmless. An
// id that comes back later starts closed.
func (s *Set) Sync(instances []discovery.Instance) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	old := *s.entries.Load()
	next := make(map[string]*entry, len(instances))
	for _, in := range instances {
		e := old[in.ID]
		if e == nil {
			e = s.newEntry(in.ID)
		}
		if p := e.addr.Load(); p == nil || *p != in.Address {
			addr := in.Address
			e.addr.Store(&addr)
		}
		next[in.ID] = e
	}
	for id, e := range old {
		if _, ok := next[id]; !ok {
			e.removed.Store(true)
		}
	}
	s.entries.Store(&next)
}

// noop is the Done of an unknown instance: shared, so it costs nothing.
func noop(Outcome) {}

// Allow asks whether a request may be sent to instance id. On success the
// caller must call Done exactly once when the response or stream ends
// (further calls are no-ops); Done is safe from any goroutine. Rejections
// wrap ErrOpen or ErrHalfOpenBusy; nothing was sent, so the caller may fail
// over. An id the Set does not know is allowed with a no-op Done, so that a
// request racing a Sync is not refused for bookkeeping reasons.
func (s *Set) Allow(id string) (Done func(Outcome), err error) {
	e := (*s.entries.Load())[id]
	if e == nil {
		return noop, nil
	}
	start := time.Now()
	done, err := e.cb.Allow()
	// Allow may have made the lazy open→half-open transition.
	e.flush()
	if err != nil {
		switch {
		case errors.Is(err, gobreaker.ErrOpenState):
			return nil, fmt.Errorf("%w: instance %s", ErrOpen, id)
		case errors.Is(err, gobreaker.ErrTooManyRequests):
			return nil, fmt.Errorf("%w: instance %s", ErrHalfOpenBusy, id)
		}
		return nil, fmt.Errorf("breaker: instance %s: %w", id, err)
	}
	r := &request{e: e, done: done, mark: e.mark.Load(), start: start}
	return r.finish, nil
}

// State returns instance id's state, Closed for an unknown id. Asking makes
// gobreaker notice an elapsed cool-down, so it may fire OnStateChange.
func (s *Set) State(id string) State {
	e := (*s.entries.Load())[id]
	if e == nil {
		return Closed
	}
	st := fromGobreaker(e.cb.State())
	e.flush()
	return st
}

// request is one admitted request, alive until its Done.
type request struct {
	e     *entry
	done  func(error) // gobreaker's second step
	mark  uint64      // the entry's mark just after admission
	start time.Time
	once  atomic.Bool
}

// finish is the Done returned by Allow.
//
// gobreaker drops an outcome whose admission bucket has rolled out of the
// closed-state window (or whose generation has passed). Dropping it across a
// state change is right: a request admitted before a trip says nothing about
// the next period. Dropping it because the request was long is wrong for LLM
// streams, which often outlive the window: an engine that hangs every stream
// would never trip. So an outcome older than recordAfter, admitted closed,
// with no transition since, is recorded as a fresh request at its end: the
// original slot is released as Ignored (a no-op if gobreaker already dropped
// it) and a new Allow+done carries the outcome.
func (r *request) finish(o Outcome) {
	if !r.once.CompareAndSwap(false, true) {
		return
	}
	e, err := r.e, o.err()
	if err != errIgnored && stateOf(r.mark) == Closed && time.Since(r.start) >= e.set.recordAfter {
		r.done(errIgnored)
		if e.mark.Load() == r.mark {
			if done, aerr := e.cb.Allow(); aerr == nil {
				done(err)
			}
		}
	} else {
		r.done(err)
	}
	e.flush()
}

// entry is one instance's breaker.
type entry struct {
	set  *Set
	id   string
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
	addr atomic.Pointer[string] // host:port for probes; Sync updates it
	// mark packs a transition count (high bits) and the current State (low
	// two bits). gobreaker's hook writes it under the breaker's lock, so it
	// is exact; readers use it to skip closed breakers cheaply and to tell
	// whether a transition happened during a request.
	mark    atomic.Uint64
	removed atomic.Bool // dropped by Sync: no more OnStateChange
	// probation is set when a half-open trial closes the breaker: until
	// probationSuccesses real requests succeed, one failure reopens it. An
	// engine whose health check passes while its requests fail then costs
	// one failed request per cool-down, not ConsecutiveFailures.
	probation atomic.Bool

	// Transitions happen under gobreaker's lock, where the user hook must
	// not run; they queue here and whoever caused them flushes after the
	// gobreaker call returns.
	pending  atomic.Bool // queue is non-empty: lets flush skip qmu
	qmu      sync.Mutex
	queue    []transition
	flushing bool // a goroutine is running hooks; others leave it theirs
}

type transition struct{ from, to State }

func (s *Set) newEntry(id string) *entry {
	e := &entry{set: s, id: id}
	st := s.settings
	st.Name = id
	st.OnStateChange = e.onStateChange
	base := st.ReadyToTrip
	st.ReadyToTrip = func(c gobreaker.Counts) bool {
		if e.probation.Load() {
			if c.TotalSuccesses < probationSuccesses {
				return true
			}
			e.probation.Store(false)
		}
		return base(c)
	}
	e.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](st)
	return e
}

func pack(epoch uint64, s State) uint64 { return epoch<<2 | uint64(s) }
func stateOf(mark uint64) State         { return State(mark & 3) }

// onStateChange is gobreaker's hook: it runs under the breaker's lock, so
// it only records.
// probationSuccesses is how many successes end a breaker's probation.
const probationSuccesses = 5

func (e *entry) onStateChange(_ string, from, to gobreaker.State) {
	e.mark.Store(pack(e.mark.Load()>>2+1, fromGobreaker(to)))
	e.probation.Store(from == gobreaker.StateHalfOpen && to == gobreaker.StateClosed)
	e.qmu.Lock()
	e.queue = append(e.queue, transition{fromGobreaker(from), fromGobreaker(to)})
	e.pending.Store(true)
	e.qmu.Unlock()
}

// flush reports queued transitions in order, holding no lock while the hook
// runs. Only one goroutine flushes an entry at a time; one that finds a flush
// under way leaves its transitions to it, which also makes a hook that calls
// back into the Set safe.
func (e *entry) flush() {
	if !e.pending.Load() {
		return
	}
	e.qmu.Lock()
	if e.flushing {
		e.qmu.Unlock()
		return
	}
	e.flushing = true
	for len(e.queue) > 0 {
		batch := e.queue
		e.queue = nil
		e.pending.Store(false)
		e.qmu.Unlock()
		for _, t := range batch {
			e.set.report(e, t)
		}
		e.qmu.Lock()
	}
	e.flushing = false
	e.qmu.Unlock()
}

func (s *Set) report(e *entry, t transition) {
	if e.removed.Load() {
		return
	}
	s.cfg.Logger.Info("breaker state change", "instance", e.id, "from", t.from.String(), "to", t.to.String())
	if s.cfg.OnStateChange != nil {
		s.cfg.OnStateChange(e.id, t.from, t.to)
	}
}
