package routing

import (
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/discovery"
)

// maxAttempts bounds the instances one request may try (first pick plus
// retries); it sizes the exclusion list so that it never allocates.
const maxAttempts = 4

// Request is what the router needs to know about one proxied request. The
// sidecar keeps one per in-flight request in a pool; Reset clears it.
type Request struct {
	// Model is the body's "model" value. A byte slice into the body, so it
	// must not be kept after the request.
	Model []byte
	// ModelName is set by Pick: the table's own copy of Model.
	ModelName string
	// Priority of the request (default normal).
	Priority Priority
	// AffinityKey hashes the session, prompt_cache_key, user or the prompt's
	// leading bytes; HasAffinity says whether there was one.
	AffinityKey uint64
	HasAffinity bool

	tried  [maxAttempts]*Endpoint
	ntried int
	cands  []*Endpoint // scratch reused across requests
}

// Reset clears r for reuse, keeping its scratch capacity.
func (r *Request) Reset() {
	cands := r.cands[:0]
	*r = Request{cands: cands}
}

// Exclude keeps ep out of later picks of this request (it failed).
func (r *Request) Exclude(ep *Endpoint) {
	if r.ntried < len(r.tried) {
		r.tried[r.ntried] = ep
		r.ntried++
	}
}

// Attempts is how many instances Exclude has recorded.
func (r *Request) Attempts() int { return r.ntried }

func (r *Request) excluded(ep *Endpoint) bool {
	for _, t := range r.tried[:r.ntried] {
		if t == ep {
			return true
		}
	}
	return false
}

// Filter narrows candidates: Keep returns false for an instance that must not
// take the request now (an open breaker, a full concurrency cap).
type Filter interface {
	Keep(ep *Endpoint) bool
}

// Built-in candidate rules of Pick: the instance serves the model, is not
// draining, its breaker is not open, and this request has not tried it.

// Router holds the current table and picks instances for requests. The table
// is swapped whole; the pick path only loads a pointer.
type Router struct {
	table   atomic.Pointer[Table]
	loads   loadRegistry
	picker  Picker
	filters []Filter
	now     func() time.Time
}

// NewRouter returns a router that picks with p and applies filters after the
// built-in ones (serves the model, not draining, not already tried).
func NewRouter(p Picker, filters ...Filter) *Router {
	return &Router{picker: p, filters: filters, now: time.Now}
}

// Update builds a table from snap and makes it current. Loads of instances
// that remain keep their counters.
func (r *Router) Update(snap discovery.Snapshot) *Table {
	r.loads.mu.Lock()
	defer r.loads.mu.Unlock()
	t := newTable(snap, &r.loads, r.now())
	keep := make(map[string]bool, len(snap.Instances))
	for _, in := range snap.Instances {
		keep[in.ID] = true
	}
	r.loads.prune(keep)
	r.table.Store(t)
	return t
}

// Table returns the current table, or nil before the first Update.
func (r *Router) Table() *Table { return r.table.Load() }

// Picker returns the router's policy.
func (r *Router) Picker() Picker { return r.picker }

// Pick chooses an instance for req. It returns ErrModelNotFound when no
// instance serves the model and ErrNoHealthyUpstream when none may take the
// request now. It takes no lock and, once req's scratch has grown, does not
// allocate.
func (r *Router) Pick(req *Request) (*Endpoint, Route, error) {
	t := r.table.Load()
	if t == nil {
		return nil, "", ErrNoTable
	}
	mr := t.ForModel(req.Model)
	if mr == nil {
		return nil, "", ErrModelNotFound
	}
	req.ModelName = mr.Name
	cands := req.cands[:0]
	for _, ep := range mr.Endpoints {
		if ep.Instance.Draining || ep.Load.Breaker() == BreakerOpen || req.excluded(ep) || !r.keep(ep) {
			continue
		}
		cands = append(cands, ep)
	}
	req.cands = cands
	if len(cands) == 0 {
		return nil, "", ErrNoHealthyUpstream
	}
	ep, route := r.picker.Pick(req, cands)
	if req.ntried > 0 {
		route = RouteRetry
	}
	return ep, route, nil
}

func (r *Router) keep(ep *Endpoint) bool {
	for _, f := range r.filters {
		if !f.Keep(ep) {
			return false
		}
	}
	return true
}
