package consul

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/internal/viewpump"
	"github.com/hashicorp/consul/api"
)

// SourceName is the Snapshot.Source of snapshots from this package.
const SourceName = "consul"

// Source streams the passing instances of the Consul service Config.Service
// as whole snapshots.
type Source struct {
	cfg     Config
	now     func() time.Time
	confirm time.Duration // discovery.ConfirmEvery; shorter in tests
	stats   queryStats
}

var _ discovery.Source = (*Source)(nil)

// NewSource validates cfg and returns a Source. Nothing talks to Consul
// until Watch.
func NewSource(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Source{cfg: cfg.withDefaults(), now: time.Now, confirm: discovery.ConfirmEvery}, nil
}

// Watch implements discovery.Source with one blocking query on
// /v1/health/service/<service>?passing (stale reads allowed, bounded by
// MaxStale). The first snapshot follows the first answer; later ones follow
// each change of the set of valid instances (Consul wakes blocking queries
// for changes that do not touch the result; those send nothing), and the
// unchanged view is sent again about every discovery.ConfirmEvery, as
// blocking queries that run out their wait confirm it. While Consul fails
// nothing is sent, so the consumer keeps the last view. Each
// call runs its own query loop; the channel closes when ctx is done.
func (s *Source) Watch(ctx context.Context) <-chan discovery.Snapshot {
	out := make(chan discovery.Snapshot)
	health := s.cfg.Client.Health()
	service := s.cfg.Service
	q := newBlockingQuery(s.cfg, "health/service/"+service, &s.stats,
		func(q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
			return health.Service(service, "", true, q)
		})
	q.confirms = true
	r := &instanceView{log: s.cfg.Logger, stats: &s.stats, now: s.now}
	go viewpump.Run(ctx, q.run, viewpump.Reducer[[]*api.ServiceEntry, discovery.Snapshot](r), nil, s.confirm, out)
	return out
}

// InvalidValues counts entries skipped as invalid, once per entry and
// problem per Watch (an entry that stays invalid is logged and counted
// once).
func (s *Source) InvalidValues() int64 { return s.stats.invalid.Load() }

// Queries counts requests sent to Consul, summed over Watch calls.
func (s *Source) Queries() int64 { return s.stats.queries.Load() }

// StaleResponses counts answers dropped because the server that gave them
// had not heard from the leader for longer than MaxStale.
func (s *Source) StaleResponses() int64 { return s.stats.stale.Load() }

// instanceView is the Source's viewpump.Reducer: the last valid instance list.
type instanceView struct {
	instances []discovery.Instance
	problems  map[string]string // entry key → error text, as last logged
	syncedAt  time.Time
	log       *slog.Logger
	stats     *queryStats
	now       func() time.Time
}

func (v *instanceView) Apply(entries []*api.ServiceEntry) bool {
	instances, problems := instancesFromEntries(entries)
	seen := make(map[string]string, len(problems))
	for _, p := range problems {
		msg := p.err.Error()
		seen[p.key] = msg
		if v.problems[p.key] != msg {
			v.stats.invalid.Add(1)
			v.log.Warn("consul: skipping invalid service entry", "entry", p.key, "error", p.err)
		}
	}
	v.problems = seen
	v.syncedAt = v.now()
	changed := !slices.EqualFunc(v.instances, instances, discovery.Instance.Equal)
	v.instances = instances
	return changed
}

func (v *instanceView) Expire() bool { return false }

func (v *instanceView) View() (discovery.Snapshot, bool) {
	snap, err := discovery.NewSnapshot(SourceName, v.instances, v.syncedAt)
	if err != nil {
		// Unreachable: every instance was validated and ids are unique.
		// Keep the last view rather than send a broken one.
		v.log.Error("consul: building snapshot", "error", err)
		return discovery.Snapshot{}, false
	}
	return snap, true
}
