package routing

import "math"

// Affinity sends requests with an affinity key (session, prompt_cache_key,
// user, or a hash of the prompt's leading bytes) to the same instance, so
// that its prefix cache serves them, and every sidecar with the same
// snapshot agrees on which instance that is: consistent hashing over a ring
// built from instance ids and weights only.
//
// The load is bounded (Mirrokni, Thorup and Zadimoghaddam, "Consistent
// Hashing with Bounded Loads"): an instance takes a keyed request only while
//
//	inflight + 1 <= ceil(c × (total + 1) × weight / totalWeight)
//
// where inflight is its global in-flight count, total and totalWeight sum
// over the model's routable, non-open instances (Config.AffinityLoadFactor
// sets c, default 1.25). With equal weights that is the paper's
// ceil(c × (total+1) / n). Otherwise the request walks the ring clockwise to
// the next candidate within the bound ("affinity-spill"), so a hot key
// spills to the same second instance on every sidecar. Instances that may
// not take the request (draining, open, at their cap, tried) are skipped
// without counting as a spill.
//
// Requests without a key go to Fallback. The pick reads precomputed rings
// and sums: a binary search plus a few checks, whatever the instance count.
type Affinity struct {
	// Fallback picks requests without a key; nil means P2C with the global
	// random source.
	Fallback Picker
}

var defaultFallback P2C

// Pick implements Picker.
func (a *Affinity) Pick(req *Request, c *Candidates) (*Endpoint, Route) {
	if !req.HasAffinity {
		if a.Fallback != nil {
			return a.Fallback.Pick(req, c)
		}
		return defaultFallback.Pick(req, c)
	}
	p := c.route.pool
	rg := &p.ring
	if len(rg.points) == 0 {
		return nil, ""
	}
	total, weight := p.inflight.Load(), p.weight.Load()
	factor := c.r.cfg.Load().AffinityLoadFactor
	i := rg.search(req.AffinityKey)
	spilled := false
	for range min(len(rg.points), maxRingWalk) {
		ep := p.endpoints[rg.owners[i]]
		if i++; i == len(rg.points) {
			i = 0
		}
		if !c.OK(ep) {
			continue
		}
		if withinBound(ep, total, weight, factor) {
			if spilled {
				return ep, RouteAffinitySpill
			}
			return ep, RouteAffinity
		}
		spilled = true
	}
	// Nothing near the key qualifies (the instances there are out, or the
	// sums lag a burst): take the least loaded candidate rather than fail.
	if ep := c.leastLoaded(req.AffinityKey); ep != nil {
		return ep, RouteAffinitySpill
	}
	return nil, ""
}

// withinBound is the bounded-load test. With no routable weight (the sums
// lag a table or breaker change) the bound is not enforced.
func withinBound(ep *Endpoint, total, weight int64, factor float64) bool {
	if weight <= 0 {
		return true
	}
	limit := math.Ceil(factor * float64(total+1) * ep.Weight / float64(weight))
	return float64(ep.Load.GlobalInFlight()+1) <= limit
}
