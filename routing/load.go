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
type Load struct {
	inflight atomic.Int64
	// peers is the in-flight sum the other sidecars of the fleet report for
	// this instance (set by the load view; 0 when alone).
	peers    atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	ttftBits atomic.Uint64 // float64 seconds, EWMA
	breaker  atomic.Uint32 // BreakerState, set by the breaker package's hook
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

// SetBreaker records the instance's breaker state.
func (l *Load) SetBreaker(b BreakerState) { l.breaker.Store(uint32(b)) }

// Breaker is the instance's breaker state (closed until told otherwise).
func (l *Load) Breaker() BreakerState { return BreakerState(l.breaker.Load()) }

// Acquire counts a request sent to the instance.
func (l *Load) Acquire() {
	l.inflight.Add(1)
	l.requests.Add(1)
}

// Release ends a request counted by Acquire. A counter that goes negative
// means a request was released twice: a bug, so it panics.
func (l *Load) Release() {
	if l.inflight.Add(-1) < 0 {
		panic("routing: in-flight counter went negative")
	}
}

// InFlight is this sidecar's open requests to the instance.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// PeerInFlight is the in-flight total that fresh peer records report.
func (l *Load) PeerInFlight() int64 { return l.peers.Load() }

// SetPeerInFlight records the peers' fresh in-flight total.
func (l *Load) SetPeerInFlight(n int64) { l.peers.Store(n) }

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

// loadRegistry hands out one Load per instance id. It is touched only when a
// table is built, never on the pick path.
type loadRegistry struct {
	mu    sync.Mutex
	loads map[string]*Load
}

// get returns the Load of id, creating it on first use.
func (g *loadRegistry) get(id string) *Load {
	if g.loads == nil {
		g.loads = make(map[string]*Load)
	}
	l, ok := g.loads[id]
	if !ok {
		l = new(Load)
		g.loads[id] = l
	}
	return l
}

// prune forgets instances that left the registry once nothing is in flight
// to them; one that comes back with requests still open keeps its counters.
func (g *loadRegistry) prune(keep map[string]bool) {
	for id, l := range g.loads {
		if !keep[id] && l.InFlight() == 0 {
			delete(g.loads, id)
		}
	}
}
