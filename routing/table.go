package routing

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
)

// Endpoint is one instance as one table sees it. Everything but Load is
// immutable; the values are precomputed at build time so that the request
// path only reads. The fields a pick reads come first, so that a scan over
// many endpoints touches one cache line of each.
type Endpoint struct {
	// Load is shared with every other table that holds this instance id.
	Load *Load
	// Weight is Instance.EffectiveWeight as a float, for scoring.
	Weight float64
	// MaxInflight caps the fleet's requests in flight to the instance: the
	// meta "max_concurrency" when it is a positive integer, else
	// Config.MaxInflightPerInstance; 0 means no cap. A fresh engine scrape
	// reporting a queue lowers it further (Router.Cap).
	MaxInflight int64
	draining    bool // Instance.Draining
	Instance    discovery.Instance
	// IDHeader is []string{Instance.ID}, ready to put in a header map
	// without allocating.
	IDHeader []string
}

// Table is an immutable routing view built from one snapshot. It is shared
// by every request that loads it; nobody writes to it after NewTable.
type Table struct {
	snapshot  discovery.Snapshot
	endpoints []*Endpoint            // sorted by instance id
	byModel   map[string]*ModelRoute // every instance serving the model, draining included
	models    []string               // sorted
	// modelsJSON is the body of GET /v1/models: every model that at least
	// one routable (non-draining) instance serves.
	modelsJSON []byte
	builtAt    time.Time
}

// newTable builds the table of snap. The loads and queues in st outlive
// tables; the caller holds the lock that guards them.
func newTable(snap discovery.Snapshot, cfg Config, st *lasting, now time.Time) *Table {
	t := &Table{
		snapshot: snap,
		byModel:  make(map[string]*ModelRoute),
		builtAt:  now,
	}
	routable := make(map[string]bool)
	for _, in := range snap.Instances {
		ep := &Endpoint{
			Instance:    in,
			Load:        st.loads.get(in.ID),
			Weight:      float64(in.EffectiveWeight()),
			IDHeader:    []string{in.ID},
			MaxInflight: maxInflight(in, cfg),
			draining:    in.Draining,
		}
		t.endpoints = append(t.endpoints, ep)
		for _, m := range in.Models {
			mr := t.byModel[m]
			if mr == nil {
				mr = &ModelRoute{Name: m}
				t.byModel[m] = mr
			}
			if !slices.Contains(mr.Endpoints, ep) {
				mr.Endpoints = append(mr.Endpoints, ep)
			}
			if !in.Draining {
				routable[m] = true
			}
		}
	}
	for m := range t.byModel {
		t.models = append(t.models, m)
	}
	slices.Sort(t.models)
	t.modelsJSON = modelList(t.models, routable, snap.SyncedAt)
	t.buildPools(st)
	return t
}

// buildPools gives every model its pool (one per distinct instance set, so
// a ring is built once however many adapters share it) and its queue, then
// moves every instance's load into its new pools.
func (t *Table) buildPools(st *lasting) {
	pools := make(map[string]*pool)
	member := make(map[*Endpoint][]*pool)
	for _, m := range t.models {
		mr := t.byModel[m]
		key := poolKey(mr.Endpoints)
		p := pools[key]
		if p == nil {
			p = &pool{endpoints: mr.Endpoints, ring: newRing(mr.Endpoints)}
			pools[key] = p
			for _, ep := range mr.Endpoints {
				member[ep] = append(member[ep], p)
			}
		}
		q := st.queues[m]
		if q == nil {
			q = &modelQueue{total: &st.queued}
			st.queues[m] = q
		}
		mr.pool, mr.queue = p, q
		p.queues = append(p.queues, q)
	}
	for _, ep := range t.endpoints {
		ep.Load.join(member[ep], !ep.draining, int64(ep.Instance.EffectiveWeight()))
	}
}

// maxInflight is the instance's base cap: its meta max_concurrency when that
// is a positive integer, else the configured default (0: none).
func maxInflight(in discovery.Instance, cfg Config) int64 {
	if v, err := strconv.ParseInt(in.Meta[metaMaxConcurrency], 10, 64); err == nil && v > 0 {
		return v
	}
	if cfg.MaxInflightPerInstance < 0 {
		return 0
	}
	return int64(cfg.MaxInflightPerInstance)
}

// modelList renders the OpenAI model list once per table.
func modelList(models []string, routable map[string]bool, synced time.Time) []byte {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range models {
		if routable[m] {
			list.Data = append(list.Data, model{ID: m, Object: "model", Created: synced.Unix(), OwnedBy: "blitzscale"})
		}
	}
	b, err := json.Marshal(list)
	if err != nil {
		// Marshalling strings and ints cannot fail; keep the API total anyway.
		return []byte(`{"object":"list","data":[]}`)
	}
	return b
}

// Snapshot is the discovery view the table was built from.
func (t *Table) Snapshot() discovery.Snapshot { return t.snapshot }

// Endpoints returns every instance, sorted by id. Callers must not modify it.
func (t *Table) Endpoints() []*Endpoint { return t.endpoints }

// Endpoint returns the instance with id, or nil.
func (t *Table) Endpoint(id string) *Endpoint {
	i, ok := slices.BinarySearchFunc(t.endpoints, id, func(ep *Endpoint, id string) int { return strings.Compare(ep.Instance.ID, id) })
	if !ok {
		return nil
	}
	return t.endpoints[i]
}

// Models returns every model any instance serves, sorted.
func (t *Table) Models() []string { return t.models }

// ModelsJSON is the ready-made body of GET /v1/models.
func (t *Table) ModelsJSON() []byte { return t.modelsJSON }

// sameView reports whether snap describes the view t routes on: the same
// source, staleness and instances. Its sync time may differ.
func (t *Table) sameView(snap discovery.Snapshot) bool {
	return t.snapshot.Source == snap.Source && t.snapshot.Stale == snap.Stale &&
		slices.EqualFunc(t.snapshot.Instances, snap.Instances, discovery.Instance.Equal)
}

// BuiltAt is when the table's routing was built: a confirmation of the
// same view keeps it.
func (t *Table) BuiltAt() time.Time { return t.builtAt }

// ForModel returns the route of model, or nil when no instance serves it.
// The model is a byte slice so the lookup does not allocate.
func (t *Table) ForModel(model []byte) *ModelRoute { return t.byModel[string(model)] }

// Model returns the route of the model named name, or nil; for callers
// holding a string (the load publisher, /state), where ForModel suits the
// request path.
func (t *Table) Model(name string) *ModelRoute { return t.byModel[name] }

// ModelRoute is one model's entry in a table.
type ModelRoute struct {
	// Name is the model id, a string owned by the table: safe to use as a
	// metric label without copying the request's bytes.
	Name string
	// Endpoints serve the model, draining ones included, sorted by id.
	Endpoints []*Endpoint

	pool  *pool       // shared with models served by the same instances
	queue *modelQueue // outlives the table, like Load
}

// Queued counts this model's requests waiting for an instance.
func (m *ModelRoute) Queued() Queued { return m.queue.depths() }

// String helps logs: "static: 3 instances, 2 models".
func (t *Table) String() string {
	return t.snapshot.Source + ": " + strconv.Itoa(len(t.endpoints)) + " instances, " + strconv.Itoa(len(t.models)) + " models"
}
