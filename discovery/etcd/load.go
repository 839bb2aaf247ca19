package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/internal/viewpump"
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
	// CheckInterval is how often records are re-aged without any event, so
	// that a silent peer vanishes about StaleAfterPeriods × its period after
	// its last record. Default 1s.
	CheckInterval time.Duration
	// Now stamps each record's receive time and ages records. Default
	// time.Now.
	Now func() time.Time
	// NewTicker returns a tick channel and its stop function. Default wraps
	// time.NewTicker. Tests inject both to age records without sleeping.
	NewTicker func(d time.Duration) (<-chan time.Time, func())
}

// DefaultCheckInterval is LoadSourceConfig.CheckInterval's default.
const DefaultCheckInterval = time.Second

func (c LoadSourceConfig) withDefaults() LoadSourceConfig {
	c.Config = c.Config.withDefaults()
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
	if c.CheckInterval < 0 {
		return fmt.Errorf("%w: CheckInterval %v: must be positive", ErrInvalidConfig, c.CheckInterval)
	}
	return nil
}

func validateName(field, name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\r\n") {
		return fmt.Errorf("%w: %s %q: required, without '/' or white space", ErrInvalidConfig, field, name)
	}
	return nil
}

// LoadSource streams the fresh load records of the other sidecars of a
// service, read from <Prefix>/services/<Service>/load/.
type LoadSource struct {
	cfg   LoadSourceConfig
	stats watchStats
}

var _ discovery.LoadSource = (*LoadSource)(nil)

// NewLoadSource validates cfg and returns a LoadSource.
func NewLoadSource(cfg LoadSourceConfig) (*LoadSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &LoadSource{cfg: cfg.withDefaults()}, nil
}

// WatchLoad implements discovery.LoadSource: the first PeerLoads follows the
// first read, later ones follow each change, including a peer going stale.
// Peers are sorted by SidecarID. The channel closes when ctx is done.
func (l *LoadSource) WatchLoad(ctx context.Context) <-chan discovery.PeerLoads {
	out := make(chan discovery.PeerLoads)
	w := l.cfg.watcher(l.cfg.loadPrefix(), &l.stats)
	r := newLoadView(l.cfg.SidecarID, l.cfg.Now, l.cfg.Logger, &l.stats)
	tick, stop := l.cfg.NewTicker(l.cfg.CheckInterval)
	go func() {
		defer stop()
		viewpump.Run(ctx, w.run, viewpump.Reducer[batch, discovery.PeerLoads](r), tick, 0, out)
	}()
	return out
}

// InvalidValues counts records skipped as undecodable, once per key and
// revision per WatchLoad.
func (l *LoadSource) InvalidValues() int64 { return l.stats.invalid.Load() }

// Resyncs counts full re-reads after the first, summed over WatchLoad calls.
func (l *LoadSource) Resyncs() int64 { return l.stats.resyncs.Load() }

// Events counts watch events received, summed over WatchLoad calls: the
// fan-out cost the fleet budget (docs/fleet-budget.md) is about.
func (l *LoadSource) Events() int64 { return l.stats.events.Load() }

// loadView is the LoadSource's viewpump.Reducer: it feeds batches to a
// discovery.PeerView, a full re-read as a sync.
type loadView struct {
	peers *discovery.PeerView
	now   func() time.Time
	log   *slog.Logger
	stats *watchStats
}

func newLoadView(self string, now func() time.Time, log *slog.Logger, stats *watchStats) *loadView {
	return &loadView{peers: discovery.NewPeerView(self), now: now, log: log, stats: stats}
}

func (v *loadView) Apply(b batch) bool {
	now := v.now()
	if b.full {
		v.peers.BeginSync()
	}
	changed := false
	for _, ev := range b.events {
		if ev.deleted {
			changed = v.peers.Delete(ev.name) || changed
			continue
		}
		// Mod revisions are positive, so the conversion is exact.
		c, err := v.peers.Put(ev.name, uint64(ev.modRev), ev.value, now)
		if err != nil {
			v.stats.invalid.Add(1)
			v.log.Warn("etcd: skipping invalid load record", "key_name", ev.name, "mod_revision", ev.modRev, "error", err)
		}
		changed = changed || c
	}
	if b.full {
		changed = v.peers.EndSync() || changed
	}
	return changed
}

func (v *loadView) Expire() bool { return v.peers.Expire(v.now()) }

func (v *loadView) View() (discovery.PeerLoads, bool) { return v.peers.View(v.now()), true }
