package routing

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// ewmaAlpha weighs a new latency sample against the running average: 0.2
// follows a change within about ten requests without jumping on one outlier.
const ewmaAlpha = 0.2

// Load holds the live counters of one instance. It is keyed by instance id
// and outlives table swaps, so a request that started under one table is
// released against the same counters under the next.
//
// Reads are single atomic loads. Writes that change the instance's global
// in-flight count or whether it counts towards its pools (in-flight, peers,
// breaker, pool membership) take mu, so that the pools' load sums, which the
// affinity bound reads instead of scanning every instance, stay exact.
type Load struct {
	inflight atomic.Int64
	// peers is the in-flight sum the other sidecars of the fleet report for
	// this instance (set by the load view; 0 when alone).
	peers    atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	ttftBits atomic.Uint64 // float64 seconds, EWMA
	breaker  atomic.Uint32 // BreakerState, set by the breaker package's hook
	engine   atomic.Pointer[EngineStats]
	// slots is the engine's concurrency as learned from its scrapes (0:
	// unknown): its running count whenever it was seen queueing, raised when
	// it is seen running more without a queue.
	slots atomic.Int64

	mu sync.Mutex
	// Guarded by mu: the current table's pools holding the instance, whether
	// it is routable there (not draining), and its weight. The slice is
	// replaced, never modified, so it may be used after mu is released.
	pools    []*pool
	routable bool
	weight   int64
}

// BreakerState mirrors an instance's circuit breaker so that the pick path
// reads one atomic instead of asking the breaker.
type BreakerState uint32

// Breaker states; the values are those of blitz_breaker_state.
const (
	BreakerClosed   BreakerState = 0
	BreakerHalfOpen BreakerState = 1
	BreakerOpen     BreakerState = 2
)

// String returns closed, half-open or open.
func (b BreakerState) String() string {
	switch b {
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "closed"
}

// EngineStats is what an instance's own metrics endpoint last said about its
// queue (vllm:num_requests_waiting and _running, vllm:kv_cache_usage_perc;
// sglang:num_queue_reqs and num_running_reqs). The sidecar's scraper sets
// it; the router ignores it once older than Config.EngineStaleAfter.
type EngineStats struct {
	// Waiting is the engine's own queue of requests not yet running.
	Waiting int64
	// Running is the number of requests the engine is running.
	Running int64
	// KVCacheUsage is the KV-cache fill in [0, 1].
	KVCacheUsage float64
	// At is when the values were scraped.
	At time.Time
}

// SetEngine records a scrape of the instance's engine. A request waiting for
// the instance's models is woken, since the cap may have risen.
func (l *Load) SetEngine(s EngineStats) {
	l.engine.Store(&s)
	switch cur := l.slots.Load(); {
	case s.Waiting > 0:
		l.slots.Store(max(1, s.Running))
	case cur > 0 && s.Running > cur:
		l.slots.Store(s.Running)
	}
	l.mu.Lock()
	pools := l.pools
	l.mu.Unlock()
	wake(pools)
}

// Slots is the engine's concurrency learned from its scrapes, 0 if unknown.
func (l *Load) Slots() int64 { return l.slots.Load() }

// Engine returns the last engine scrape, or false when there was none.
// Callers judge its age by At.
func (l *Load) Engine() (EngineStats, bool) {
	if s := l.engine.Load(); s != nil {
		return *s, true
	}
	return EngineStats{}, false
}

// SetBreaker records the instance's breaker state. An open instance leaves
// its pools' load sums; one that closes again wakes its models' queues.
func (l *Load) SetBreaker(b BreakerState) {
	l.mu.Lock()
	was := l.contributes()
	old := BreakerState(l.breaker.Swap(uint32(b)))
	if is := l.contributes(); is != was {
		sign := int64(1)
		if !is {
			sign = -1
		}
		l.movePools(sign*l.GlobalInFlight(), sign*l.weight)
	}
	pools := l.pools
	l.mu.Unlock()
	if old == BreakerOpen && b != BreakerOpen {
		wake(pools)
	}
}

// Breaker is the instance's breaker state (closed until told otherwise).
func (l *Load) Breaker() BreakerState { return BreakerState(l.breaker.Load()) }

// Acquire counts a request sent to the instance, whatever its cap. The
// sidecar uses Router.Acquire, which respects the cap; this stays for
// callers that route by other means.
func (l *Load) Acquire() {
	l.mu.Lock()
	l.acquireLocked()
	l.mu.Unlock()
}

// tryAcquire counts a request unless the fleet's in-flight count has reached
// limit (0: no limit). Check and increment happen under one lock, so
// concurrent requests cannot both take the last slot.
func (l *Load) tryAcquire(limit int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if limit > 0 && l.GlobalInFlight() >= limit {
		return false
	}
	l.acquireLocked()
	return true
}

func (l *Load) acquireLocked() {
	l.inflight.Add(1)
	l.requests.Add(1)
	l.addToPools(1, 0)
}

// Release ends a request counted by Acquire and wakes the first request
// waiting for one of the instance's models. A counter that goes negative
// means a request was released twice: a bug, so it panics.
func (l *Load) Release() {
	l.mu.Lock()
	if l.inflight.Add(-1) < 0 {
		l.inflight.Add(1)
		l.mu.Unlock()
		panic("routing: in-flight counter went negative")
	}
	l.addToPools(-1, 0)
	pools := l.pools
	l.mu.Unlock()
	wake(pools)
}

// InFlight is this sidecar's open requests to the instance.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// PeerInFlight is the in-flight total that fresh peer records report.
func (l *Load) PeerInFlight() int64 { return l.peers.Load() }

// SetPeerInFlight records the peers' fresh in-flight total. A drop wakes
// the instance's queues: the cap counts peers' requests too.
func (l *Load) SetPeerInFlight(n int64) {
	l.mu.Lock()
	old := l.peers.Swap(n)
	l.addToPools(n-old, 0)
	pools := l.pools
	l.mu.Unlock()
	if n < old {
		wake(pools)
	}
}

// GlobalInFlight is the fleet's view: own counters plus fresh peer records.
func (l *Load) GlobalInFlight() int64 { return l.inflight.Load() + l.peers.Load() }

// Requests is the number of requests ever sent to the instance.
func (l *Load) Requests() uint64 { return l.requests.Load() }

// Failures is the number of upstream failures ever seen.
func (l *Load) Failures() uint64 { return l.failures.Load() }

// RecordFailure counts an upstream failure (not a client cancellation).
func (l *Load) RecordFailure() { l.failures.Add(1) }

// ObserveTTFT folds one time-to-first-byte sample into the EWMA.
func (l *Load) ObserveTTFT(d time.Duration) {
	s := d.Seconds()
	for {
		old := l.ttftBits.Load()
		next := s
		if old != 0 {
			prev := math.Float64frombits(old)
			next = prev + ewmaAlpha*(s-prev)
		}
		if l.ttftBits.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

// TTFT is the EWMA time to first byte (0 before the first sample).
func (l *Load) TTFT() time.Duration {
	return time.Duration(math.Float64frombits(l.ttftBits.Load()) * float64(time.Second))
}

// contributes says whether the instance counts towards its pools' sums:
// routable in the current table and not open-circuited. Caller holds mu.
func (l *Load) contributes() bool {
	return l.routable && l.Breaker() != BreakerOpen
}

// addToPools moves the pools' sums when the instance contributes. Caller
// holds mu.
func (l *Load) addToPools(inflight, weight int64) {
	if l.contributes() {
		l.movePools(inflight, weight)
	}
}

// movePools adds to the pools' sums unconditionally. Caller holds mu.
func (l *Load) movePools(inflight, weight int64) {
	for _, p := range l.pools {
		p.inflight.Add(inflight)
		p.weight.Add(weight)
	}
}

// join moves the instance from its previous table's pools to pools, taking
// its contribution along; called when a table is built.
func (l *Load) join(pools []*pool, routable bool, weight int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addToPools(-l.GlobalInFlight(), -l.weight)
	l.pools, l.routable, l.weight = pools, routable, weight
	l.addToPools(l.GlobalInFlight(), l.weight)
}

// loadRegistry hands out one Load per instance id. It is touched only when a
// table is built (under Router.mu), never on the pick path.
type loadRegistry map[string]*Load

// get returns the Load of id, creating it on first use.
func (g loadRegistry) get(id string) *Load {
	l, ok := g[id]
	if !ok {
		l = new(Load)
		g[id] = l
	}
	return l
}

// leave takes instances that left the registry out of every pool, and
// forgets those with nothing in flight; one that comes back with requests
// still open keeps its counters.
func (g loadRegistry) leave(keep map[string]bool) {
	for id, l := range g {
		if keep[id] {
			continue
		}
		l.join(nil, false, 0)
		if l.InFlight() == 0 {
			delete(g, id)
		}
	}
}
