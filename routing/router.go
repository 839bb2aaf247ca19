package routing

import (
	"sync"
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
	cands  Candidates // handed to the picker without allocating
}

// Reset clears r for reuse.
func (r *Request) Reset() { *r = Request{} }

// Exclude keeps ep out of later picks of this request (it failed).
func (r *Request) Exclude(ep *Endpoint) {
	if r.ntried < len(r.tried) {
		r.tried[r.ntried] = ep
		r.ntried++
	}
}

// Attempts is how many instances Exclude has recorded.
func (r *Request) Attempts() int { return r.ntried }

// excluded compares counters, not endpoints: they identify an instance
// across table swaps, endpoints do not.
func (r *Request) excluded(ep *Endpoint) bool {
	for _, t := range r.tried[:r.ntried] {
		if t.Load == ep.Load {
			return true
		}
	}
	return false
}

// Filter narrows candidates: Keep returns false for an instance that must not
// take the request now.
type Filter interface {
	Keep(ep *Endpoint) bool
}

// Router holds the current table and picks instances for requests. The table
// is swapped whole; the pick path only loads a pointer.
type Router struct {
	table   atomic.Pointer[Table]
	cfg     atomic.Pointer[Config] // defaults applied; swapped by Reconfigure
	picker  atomic.Pointer[pickerBox]
	filters []Filter
	now     func() time.Time

	mu sync.Mutex // serialises Update
	st lasting
}

// lasting is the router state that outlives tables: live counters keyed by
// instance id and queues keyed by model name. The maps change only under
// Router.mu, when a table is built.
type lasting struct {
	loads  loadRegistry
	queues map[string]*modelQueue
	// queued is the depth of all queues per priority (QueueDepth).
	queued [numPriorities]atomic.Int64
}

// New returns a router for cfg that picks with p and applies filters after
// the built-in candidate rules (serves the model, not draining, breaker not
// open, below its cap, not already tried). It fails when cfg does not
// validate.
func New(cfg Config, p Picker, filters ...Filter) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{
		filters: filters,
		now:     time.Now,
		st:      lasting{loads: loadRegistry{}, queues: map[string]*modelQueue{}},
	}
	c := cfg.withDefaults()
	r.cfg.Store(&c)
	r.picker.Store(&pickerBox{p})
	return r, nil
}

// NewRouter is New with the default Config.
func NewRouter(p Picker, filters ...Filter) *Router {
	r, err := New(Config{}, p, filters...)
	if err != nil {
		panic(err) // the zero Config is valid
	}
	return r
}

// Config returns the router's configuration, defaults applied.
func (r *Router) Config() Config { return *r.cfg.Load() }

// pickerBox lets an interface value live in an atomic.Pointer.
type pickerBox struct{ Picker }

// Reconfigure swaps the configuration and the picker (a SIGHUP reload) and
// rebuilds the current table under the new caps. Requests in flight keep
// their instances; queued requests keep waiting under the new limits.
func (r *Router) Reconfigure(cfg Config, p Picker) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	c := cfg.withDefaults()
	r.mu.Lock()
	r.cfg.Store(&c)
	r.picker.Store(&pickerBox{p})
	r.mu.Unlock()
	if t := r.table.Load(); t != nil {
		r.update(t.Snapshot(), true) // the same view under new caps
	}
	return nil
}

// Update builds a table from snap and makes it current. Loads of instances
// that remain keep their counters, and queued requests keep their place;
// every queue's head retries, since instances may have come or gone.
//
// A snapshot that only confirms the current view (the same source,
// staleness and instances, with a newer sync time) keeps the table's
// routing as it is: the current table is copied with the new snapshot,
// which costs a comparison, not a rebuild.
func (r *Router) Update(snap discovery.Snapshot) *Table { return r.update(snap, false) }

// update is Update; rebuild forces a new table for an unchanged view (the
// configuration changed).
func (r *Router) update(snap discovery.Snapshot, rebuild bool) *Table {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cur := r.table.Load(); !rebuild && cur != nil && cur.sameView(snap) {
		t := *cur
		t.snapshot = snap
		r.dropIdleQueues(&t)
		r.table.Store(&t)
		return &t
	}
	t := newTable(snap, *r.cfg.Load(), &r.st, r.now())
	keep := make(map[string]bool, len(snap.Instances))
	for _, in := range snap.Instances {
		keep[in.ID] = true
	}
	r.st.loads.leave(keep)
	r.dropIdleQueues(t)
	r.table.Store(t)
	for _, q := range r.st.queues {
		q.wakeHead()
	}
	return t
}

// dropIdleQueues forgets the empty queues of models t does not serve. A
// queue of a model that left stays while requests wait in it (their retry
// tells them the model is gone); a later update, a confirmation included,
// drops it. The caller holds r.mu.
func (r *Router) dropIdleQueues(t *Table) {
	for m, q := range r.st.queues {
		if t.byModel[m] == nil && q.len.Load() == 0 {
			delete(r.st.queues, m)
		}
	}
}

// Table returns the current table, or nil before the first Update.
func (r *Router) Table() *Table { return r.table.Load() }

// Picker returns the router's policy.
func (r *Router) Picker() Picker { return r.picker.Load().Picker }

// Pick chooses an instance for req without counting it in flight (Acquire
// does both). It returns ErrModelNotFound when no instance serves the model,
// ErrSaturated when the only instances that could take it are at their cap,
// and ErrNoHealthyUpstream when none may take it. It takes no lock and does
// not allocate.
func (r *Router) Pick(req *Request) (*Endpoint, Route, error) {
	mr, err := r.route(req)
	if err != nil {
		return nil, "", err
	}
	return r.pickIn(mr, req)
}

// route finds the model's entry in the current table.
func (r *Router) route(req *Request) (*ModelRoute, error) {
	t := r.table.Load()
	if t == nil {
		return nil, ErrNoTable
	}
	mr := t.ForModel(req.Model)
	if mr == nil {
		return nil, ErrModelNotFound
	}
	req.ModelName = mr.Name
	return mr, nil
}

func (r *Router) pickIn(mr *ModelRoute, req *Request) (*Endpoint, Route, error) {
	c := &req.cands
	*c = Candidates{route: mr, req: req, r: r}
	ep, route := r.picker.Load().Pick(req, c)
	if ep == nil {
		return nil, "", r.whyNone(c)
	}
	if req.ntried > 0 {
		route = RouteRetry
	}
	return ep, route, nil
}

// whyNone tells a saturated model from one with no usable instance, after
// a pick found nothing. An instance that passes every rule but the cap
// makes it saturated, so waiting helps; it counts whatever its load reads
// now, because a release between the pick and this scan must not turn a
// full model into a broken one. It scans, but only on this slow path.
func (r *Router) whyNone(c *Candidates) error {
	for _, ep := range c.route.Endpoints {
		if !ep.draining && ep.Load.Breaker() != BreakerOpen && !c.req.excluded(ep) && r.keep(ep) {
			return ErrSaturated
		}
	}
	return ErrNoHealthyUpstream
}

func (r *Router) keep(ep *Endpoint) bool {
	for _, f := range r.filters {
		if !f.Keep(ep) {
			return false
		}
	}
	return true
}

// Cap is ep's concurrency cap now (0: none): its MaxInflight, or the slots
// its engine was learned to have plus one, whichever is lower (capWith).
func (r *Router) Cap(ep *Endpoint) int64 {
	return capWith(ep.MaxInflight, ep.Load.Slots())
}
