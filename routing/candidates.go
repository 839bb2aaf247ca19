package routing

import (
	"time"
)

// maxDraws bounds the random draws a sampling picker makes before it falls
// back to a scan of the model's instances: with half of them ineligible, 8
// draws all miss with probability 1/256, so the scan is rare unless nearly
// every instance is out (then the scan is what finds the few left).
const maxDraws = 8

// Candidates is one pick's view of a model's instances: all of them, in id
// order, and the rule saying which may take the request now. Pickers sample
// or scan the instances and test only the ones they look at, so a random
// pick costs the same with 10 instances as with 1,000. It lives in the
// Request, so handing it to a Picker allocates nothing.
type Candidates struct {
	route *ModelRoute
	req   *Request
	r     *Router
	now   time.Time // read once, when an engine scrape's age first matters
}

// Len is the number of instances serving the model, eligible or not.
func (c *Candidates) Len() int { return len(c.route.Endpoints) }

// At returns instance i, 0 <= i < Len().
func (c *Candidates) At(i int) *Endpoint { return c.route.Endpoints[i] }

// Model is the model's route.
func (c *Candidates) Model() *ModelRoute { return c.route }

// OK reports whether ep may take the request now: it is not draining, its
// breaker is not open, the request has not tried it, it is below its cap,
// and the router's filters keep it.
func (c *Candidates) OK(ep *Endpoint) bool {
	ok, _ := c.check(ep)
	return ok
}

// Load is the score load-aware pickers minimise: the fleet's requests in
// flight to ep plus the queue its engine reported (when fresh), over its
// weight.
func (c *Candidates) Load(ep *Endpoint) float64 {
	n := ep.Load.GlobalInFlight()
	if s := c.engine(ep); s != nil {
		n += s.Waiting
	}
	return float64(n) / ep.Weight
}

// check is OK and Load in one read of ep's counters; load is only
// meaningful when ok.
func (c *Candidates) check(ep *Endpoint) (ok bool, load float64) {
	if ep.draining || ep.Load.Breaker() == BreakerOpen || c.req.excluded(ep) {
		return false, 0
	}
	n := ep.Load.GlobalInFlight()
	s := c.engine(ep)
	if limit := capWith(ep.MaxInflight, ep.Load.Slots()); limit > 0 && n >= limit {
		return false, 0
	}
	if len(c.r.filters) > 0 && !c.r.keep(ep) {
		return false, 0
	}
	if s != nil {
		n += s.Waiting
	}
	return true, float64(n) / ep.Weight
}

// engine returns ep's engine scrape when it is fresh, else nil.
func (c *Candidates) engine(ep *Endpoint) *EngineStats {
	s := ep.Load.engine.Load()
	if s == nil {
		return nil
	}
	if c.now.IsZero() {
		c.now = c.r.now()
	}
	if c.now.Sub(s.At) > c.r.cfg.Load().EngineStaleAfter {
		return nil
	}
	return s
}

// capWith is an instance's cap given its base (0: none) and the slots its
// engine was learned to have (0: unknown). A learned engine gets one request
// of headroom above its slots: when the engine runs it without queueing, the
// next scrape raises the slots (additive increase); when it queues it, the
// cap stays where the engine's capacity is. So the excess waits here, where
// priority applies, and the cap does not swing back to the base the moment
// a scrape sees an empty queue.
func capWith(base, slots int64) int64 {
	if slots <= 0 {
		return base
	}
	if learned := slots + 1; base <= 0 || learned < base {
		return learned
	}
	return base
}

// sample returns a uniformly drawn candidate, or nil when there is none.
func (c *Candidates) sample(rnd func(uint64) uint64) *Endpoint {
	eps := c.route.Endpoints
	for range maxDraws {
		if ep := eps[randN(rnd, uint64(len(eps)))]; c.OK(ep) {
			return ep
		}
	}
	a, _ := c.scanSample(rnd, 1)
	return a
}

// sampleTwo returns two distinct uniformly drawn candidates; b is nil when
// only one exists, both are nil when none does.
func (c *Candidates) sampleTwo(rnd func(uint64) uint64) (a, b *Endpoint) {
	eps := c.route.Endpoints
	n := uint64(len(eps))
	if n == 1 {
		if c.OK(eps[0]) {
			return eps[0], nil
		}
		return nil, nil
	}
	// Two distinct indexes in two draws; most picks end here.
	i := randN(rnd, n)
	j := randN(rnd, n-1)
	if j >= i {
		j++
	}
	if c.OK(eps[i]) {
		a = eps[i]
	}
	if c.OK(eps[j]) {
		if a == nil {
			a = eps[j]
		} else {
			return a, eps[j]
		}
	}
	for range maxDraws {
		ep := eps[randN(rnd, n)]
		if ep == a || !c.OK(ep) {
			continue
		}
		if a == nil {
			a = ep
			continue
		}
		return a, ep
	}
	return c.scanSample(rnd, 2)
}

// scanSample is the fallback of sampling: count the candidates, draw k (1 or
// 2) distinct ranks among them, and find those in a second pass. The
// candidates may change between the passes; then it returns what it found.
func (c *Candidates) scanSample(rnd func(uint64) uint64, k int) (a, b *Endpoint) {
	eps := c.route.Endpoints
	m := uint64(0)
	for _, ep := range eps {
		if c.OK(ep) {
			m++
		}
	}
	if m == 0 {
		return nil, nil
	}
	x, y := randN(rnd, m), m // y == m: no second rank
	if k == 2 && m > 1 {
		y = randN(rnd, m-1)
		if y >= x {
			y++
		}
	}
	rank := uint64(0)
	var last *Endpoint
	for _, ep := range eps {
		if !c.OK(ep) {
			continue
		}
		last = ep
		switch rank {
		case x:
			a = ep
		case y:
			b = ep
		}
		rank++
		if a != nil && (b != nil || y == m) {
			return a, b
		}
	}
	if a == nil {
		a = last
	}
	if a == b {
		b = nil
	}
	return a, b
}

// leastLoaded returns the candidate with the lowest Load, or nil. Ties,
// common when instances idle, go to the (turn mod ties)-th of them, so a
// rotating turn spreads them evenly; a scan that started at a rotating
// offset would favour the instance after a run of ineligible ones. A second
// pass runs only when there are ties.
func (c *Candidates) leastLoaded(turn uint64) *Endpoint {
	var best *Endpoint
	bestLoad, ties := 0.0, uint64(0)
	for _, ep := range c.route.Endpoints {
		ok, l := c.check(ep)
		switch {
		case !ok:
		case best == nil || l < bestLoad:
			best, bestLoad, ties = ep, l, 1
		case l == bestLoad:
			ties++
		}
	}
	if ties <= 1 {
		return best
	}
	k := turn % ties
	for _, ep := range c.route.Endpoints {
		if ok, l := c.check(ep); ok && l == bestLoad {
			if k == 0 {
				return ep
			}
			k--
		}
	}
	return best // the loads moved between the passes
}

// nth returns the (turn mod m)-th of the m candidates, or nil: round-robin
// over the candidates themselves, so that an instance after a run of
// ineligible ones does not inherit their turns.
func (c *Candidates) nth(turn uint64) *Endpoint {
	var first *Endpoint
	m := uint64(0)
	for _, ep := range c.route.Endpoints {
		if c.OK(ep) {
			if first == nil {
				first = ep
			}
			m++
		}
	}
	if m <= 1 {
		return first
	}
	k := turn % m
	for _, ep := range c.route.Endpoints {
		if c.OK(ep) {
			if k == 0 {
				return ep
			}
			k--
		}
	}
	return first // the candidates changed between the passes
}
