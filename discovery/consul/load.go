package consul

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/internal/viewpump"
	"github.com/hashicorp/consul/api"
)

// StaleAfterPeriods is how many of its own publish periods a load record
// stays fresh after it was received; the rule lives in discovery.PeerView.
const StaleAfterPeriods = discovery.StaleAfterPeriods

// LoadSourceConfig configures a LoadSource. Zero values mean the defaults.
type LoadSourceConfig struct {
	Config
	// SidecarID is this sidecar's id; its own record is left out of the
	// peers' view because the sidecar has its live counters. Required.
	SidecarID string
	// RecordsPerSecond bounds how many records one LoadSource reads per
	// second on average. Every answer of a KV list query carries the whole
	// prefix, so with N sidecars each query costs N records; queries are
	// spaced by at least N / RecordsPerSecond seconds (and QueryInterval).
	// With the default 100 a fleet of 1,000 sidecars reads each prefix
	// every 10s, 100,000 records/s cluster-wide (docs/consul.md), while a
	// record lives for three of its publisher's periods (10s each at that
	// size), so none ages out between two reads. Default 100.
	RecordsPerSecond float64
	// CheckInterval is how often records are re-aged without any answer,
	// so that a silent peer vanishes about StaleAfterPeriods × its period
	// after its last record. Default 1s.
	CheckInterval time.Duration
	// Now stamps each record's receive time and ages records. Default
	// time.Now.
	Now func() time.Time
	// NewTicker returns a tick channel and its stop function. Default wraps
	// time.NewTicker. Tests inject both to age records without sleeping.
	NewTicker func(d time.Duration) (<-chan time.Time, func())
}

// Defaults of LoadSourceConfig.
const (
	DefaultRecordsPerSecond = 100
	DefaultCheckInterval    = time.Second
)

func (c LoadSourceConfig) withDefaults() LoadSourceConfig {
	c.Config = c.Config.withDefaults()
	if c.RecordsPerSecond == 0 {
		c.RecordsPerSecond = DefaultRecordsPerSecond
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NewTicker == nil {
		c.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	return c
}

// Validate rejects a configuration with a message that names the bad field.
func (c LoadSourceConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := validateName("SidecarID", c.SidecarID); err != nil {
		return err
	}
	if c.RecordsPerSecond < 0 {
		return fmt.Errorf("%w: RecordsPerSecond %v: must be positive", ErrInvalidConfig, c.RecordsPerSecond)
	}
	if c.CheckInterval < 0 {
		return fmt.Errorf("%w: CheckInterval %v: must be positive", ErrInvalidConfig, c.CheckInterval)
	}
	return nil
}

// LoadSource streams the fresh load records of the other sidecars of a
// service, read from <KVPrefix>/services/<Service>/load/.
type LoadSource struct {
	cfg   LoadSourceConfig
	stats queryStats
}

var _ discovery.LoadSource = (*LoadSource)(nil)

// NewLoadSource validates cfg and returns a LoadSource.
func NewLoadSource(cfg LoadSourceConfig) (*LoadSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &LoadSource{cfg: cfg.withDefaults()}, nil
}

// WatchLoad implements discovery.LoadSource with a blocking KV list query
// on the load prefix, under the same rules as Source.Watch. The first
// PeerLoads follows the first answer, later ones follow each change,
// including a peer going stale. Peers are sorted by SidecarID. The channel
// closes when ctx is done.
func (l *LoadSource) WatchLoad(ctx context.Context) <-chan discovery.PeerLoads {
	out := make(chan discovery.PeerLoads)
	kv := l.cfg.Client.KV()
	prefix := l.cfg.loadPrefix()
	q := newBlockingQuery(l.cfg.Config, "kv/"+prefix, &l.stats,
		func(q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
			return kv.List(prefix, q)
		})
	perRecord := time.Duration(float64(time.Second) / l.cfg.RecordsPerSecond)
	q.pace = func(pairs api.KVPairs) time.Duration { return time.Duration(len(pairs)) * perRecord }
	r := newLoadView(prefix, l.cfg.SidecarID, l.cfg.Now, l.cfg.Logger, &l.stats)
	tick, stop := l.cfg.NewTicker(l.cfg.CheckInterval)
	go func() {
		defer stop()
		viewpump.Run(ctx, q.run, viewpump.Reducer[api.KVPairs, discovery.PeerLoads](r), tick, 0, out)
	}()
	return out
}

// InvalidValues counts records skipped as undecodable, once per key and
// modify index per WatchLoad.
func (l *LoadSource) InvalidValues() int64 { return l.stats.invalid.Load() }

// Queries counts requests sent to Consul, summed over WatchLoad calls.
func (l *LoadSource) Queries() int64 { return l.stats.queries.Load() }

// StaleResponses counts answers dropped for a LastContact over MaxStale.
func (l *LoadSource) StaleResponses() int64 { return l.stats.stale.Load() }

// loadView is the LoadSource's viewpump.Reducer: it feeds every answer, which is
// the whole prefix, to a discovery.PeerView as a full listing.
type loadView struct {
	peers  *discovery.PeerView
	prefix string
	now    func() time.Time
	log    *slog.Logger
	stats  *queryStats
}

func newLoadView(prefix, self string, now func() time.Time, log *slog.Logger, stats *queryStats) *loadView {
	return &loadView{peers: discovery.NewPeerView(self), prefix: prefix, now: now, log: log, stats: stats}
}

func (v *loadView) Apply(pairs api.KVPairs) bool {
	now := v.now()
	v.peers.BeginSync()
	changed := false
	for _, p := range pairs {
		name, ok := strings.CutPrefix(p.Key, v.prefix)
		if !ok || name == "" || strings.Contains(name, "/") {
			continue // not a record of a peer (a folder, a nested key)
		}
		c, err := v.peers.Put(name, p.ModifyIndex, p.Value, now)
		if err != nil {
			v.stats.invalid.Add(1)
			v.log.Warn("consul: skipping invalid load record", "key", p.Key, "modify_index", p.ModifyIndex, "error", err)
		}
		changed = changed || c
	}
	return v.peers.EndSync() || changed
}

func (v *loadView) Expire() bool { return v.peers.Expire(v.now()) }

func (v *loadView) View() (discovery.PeerLoads, bool) { return v.peers.View(v.now()), true }
