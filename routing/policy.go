package routing

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Route says which rule chose an instance; the sidecar returns it in the
// X-Blitz-Route header.
type Route string

// Routes the pickers of this package report.
const (
	RouteRoundRobin Route = "round-robin"
	RouteRandom     Route = "random"
	RouteLeastLoad  Route = "least-load"
	RouteP2C        Route = "p2c"
	RouteRetry      Route = "retry"
)

// Picker chooses one of cands, which is never empty. Implementations must not
// keep cands or req and must not allocate: Pick runs on every request.
type Picker interface {
	Pick(req *Request, cands []*Endpoint) (*Endpoint, Route)
}

// Policies lists the names NewPicker accepts. "auto" is p2c until the
// affinity policies land; it will prefer affinity when a request has a key.
var Policies = []string{"auto", "round-robin", "random", "least-load", "p2c"}

// NewPicker returns the picker named by a --policy value.
func NewPicker(name string) (Picker, error) {
	switch name {
	case "auto", "p2c":
		return &P2C{}, nil
	case "round-robin":
		return &RoundRobin{}, nil
	case "random":
		return &Random{}, nil
	case "least-load":
		return &LeastLoad{}, nil
	}
	return nil, fmt.Errorf("%w %q (one of %v)", ErrUnknownPolicy, name, Policies)
}

var (
	_ Picker = (*RoundRobin)(nil)
	_ Picker = (*Random)(nil)
	_ Picker = (*LeastLoad)(nil)
	_ Picker = (*P2C)(nil)
)

// RoundRobin cycles through the candidates.
type RoundRobin struct{ next atomic.Uint64 }

// Pick implements Picker.
func (p *RoundRobin) Pick(_ *Request, cands []*Endpoint) (*Endpoint, Route) {
	return cands[(p.next.Add(1)-1)%uint64(len(cands))], RouteRoundRobin
}

// Random picks uniformly. Rand is the random source; nil means
// math/rand/v2's lock-free global generator.
type Random struct{ Rand func(n uint64) uint64 }

// Pick implements Picker.
func (p *Random) Pick(_ *Request, cands []*Endpoint) (*Endpoint, Route) {
	return cands[randN(p.Rand, uint64(len(cands)))], RouteRandom
}

func randN(f func(uint64) uint64, n uint64) uint64 {
	if f == nil {
		return rand.Uint64N(n)
	}
	return f(n)
}

// load is the score every load-aware picker minimises: the fleet's requests
// in flight to the instance over its weight.
func load(ep *Endpoint) float64 {
	return float64(ep.Load.GlobalInFlight()) / ep.Weight
}

// LeastLoad picks the candidate with the lowest global load. It starts its
// scan at a rotating offset so that ties spread instead of piling onto the
// first instance.
type LeastLoad struct{ next atomic.Uint64 }

// Pick implements Picker.
func (p *LeastLoad) Pick(_ *Request, cands []*Endpoint) (*Endpoint, Route) {
	n := uint64(len(cands))
	start := (p.next.Add(1) - 1) % n
	best := cands[start]
	bestLoad := load(best)
	for i := uint64(1); i < n; i++ {
		ep := cands[(start+i)%n]
		if l := load(ep); l < bestLoad {
			best, bestLoad = ep, l
		}
	}
	return best, RouteLeastLoad
}

// P2C is the power of two choices: sample two distinct candidates, keep the
// one with the lower global load, break ties by the lower EWMA time to first
// token. It avoids the herd that exact least-load causes when many sidecars
// act on the same slightly stale view. Rand as in Random.
type P2C struct{ Rand func(n uint64) uint64 }

// Pick implements Picker.
func (p *P2C) Pick(_ *Request, cands []*Endpoint) (*Endpoint, Route) {
	n := uint64(len(cands))
	if n == 1 {
		return cands[0], RouteP2C
	}
	i := randN(p.Rand, n)
	j := randN(p.Rand, n-1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	la, lb := load(a), load(b)
	switch {
	case la < lb:
		return a, RouteP2C
	case lb < la:
		return b, RouteP2C
	case b.Load.TTFT() < a.Load.TTFT():
		return b, RouteP2C
	}
	return a, RouteP2C
}
