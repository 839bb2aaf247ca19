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
	RouteRoundRobin    Route = "round-robin"
	RouteRandom        Route = "random"
	RouteLeastLoad     Route = "least-load"
	RouteP2C           Route = "p2c"
	RouteAffinity      Route = "affinity"       // the key's home instance took it
	RouteAffinitySpill Route = "affinity-spill" // home was over the load bound
	RouteRetry         Route = "retry"
)

// Routes lists every Route this package reports, for ready-made header
// values and metric labels.
var Routes = []Route{RouteRoundRobin, RouteRandom, RouteLeastLoad, RouteP2C, RouteAffinity, RouteAffinitySpill, RouteRetry}

// Picker chooses one of the candidates in c, or returns nil when none may
// take the request (the router then says why). Implementations must not keep
// req or c and must not allocate: Pick runs on every request. Sampling
// pickers should test only the instances they draw (c.OK), so that their
// cost does not grow with the model's instance count.
type Picker interface {
	Pick(req *Request, c *Candidates) (*Endpoint, Route)
}

// Policies lists the names NewPicker accepts.
var Policies = []string{"auto", "round-robin", "random", "least-load", "p2c", "affinity"}

// NewPicker returns the picker named by a --policy value. "auto", the
// default, is Affinity: consistent hashing with bounded load for requests
// with an affinity key, P2C for the others. "affinity" is the same picker
// under its own name, so an experiment can name what it compares.
func NewPicker(name string) (Picker, error) {
	switch name {
	case "auto", "affinity":
		return &Affinity{}, nil
	case "p2c":
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
	_ Picker = (*Affinity)(nil)
)

// RoundRobin cycles through the candidates. When the instance whose turn it
// is may not take the request, the turn goes to the (turn mod m)-th of the m
// candidates, found by a scan: only then does the cost grow with the
// instance count, and no instance inherits the turns of its ineligible
// neighbours.
type RoundRobin struct{ next atomic.Uint64 }

// Pick implements Picker.
func (p *RoundRobin) Pick(_ *Request, c *Candidates) (*Endpoint, Route) {
	turn := p.next.Add(1) - 1
	if ep := c.At(int(turn % uint64(c.Len()))); c.OK(ep) {
		return ep, RouteRoundRobin
	}
	if ep := c.nth(turn); ep != nil {
		return ep, RouteRoundRobin
	}
	return nil, ""
}

// Random picks uniformly among the candidates. Rand is the random source;
// nil means math/rand/v2's lock-free global generator.
type Random struct{ Rand func(n uint64) uint64 }

// Pick implements Picker.
func (p *Random) Pick(_ *Request, c *Candidates) (*Endpoint, Route) {
	if ep := c.sample(p.Rand); ep != nil {
		return ep, RouteRandom
	}
	return nil, ""
}

func randN(f func(uint64) uint64, n uint64) uint64 {
	if f == nil {
		return rand.Uint64N(n)
	}
	return f(n)
}

// LeastLoad picks the candidate with the lowest global load (Candidates.Load).
// Ties rotate, so that they spread instead of piling onto one instance. It
// scans every instance: O(n).
type LeastLoad struct{ next atomic.Uint64 }

// Pick implements Picker.
func (p *LeastLoad) Pick(_ *Request, c *Candidates) (*Endpoint, Route) {
	if ep := c.leastLoaded(p.next.Add(1) - 1); ep != nil {
		return ep, RouteLeastLoad
	}
	return nil, ""
}

// P2C is the power of two choices: sample two distinct candidates, keep the
// one with the lower global load, break ties by the lower EWMA time to first
// token. It avoids the herd that exact least-load causes when many sidecars
// act on the same slightly stale view. Rand as in Random.
type P2C struct{ Rand func(n uint64) uint64 }

// Pick implements Picker.
func (p *P2C) Pick(_ *Request, c *Candidates) (*Endpoint, Route) {
	a, b := c.sampleTwo(p.Rand)
	switch {
	case a == nil:
		return nil, ""
	case b == nil:
		return a, RouteP2C
	}
	la, lb := c.Load(a), c.Load(b)
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
