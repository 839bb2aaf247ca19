package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
)

// StaleAfterPeriods is how many of its own publish periods a load record
// stays fresh after it was received (DESIGN.md: three).
const StaleAfterPeriods = 3

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
	r := &loadView{entries: map[string]loadEntry{}, self: l.cfg.SidecarID, now: l.cfg.Now, log: l.cfg.Logger, stats: &l.stats}
	tick, stop := l.cfg.NewTicker(l.cfg.CheckInterval)
	go func() {
		defer stop()
		pump(ctx, w, reducer[discovery.PeerLoads](r), tick, out)
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

// loadEntry is one peer's record with the time this sidecar received it.
// Receive time, not a timestamp in the record, ages it: clocks of different
// hosts need not agree.
type loadEntry struct {
	modRev   int64
	report   discovery.LoadReport
	received time.Time
	valid    bool
	fresh    bool // as of the last view built; expire compares against it
}

// loadView is the LoadSource's reducer.
type loadView struct {
	entries map[string]loadEntry
	self    string
	now     func() time.Time
	log     *slog.Logger
	stats   *watchStats
}

func (v *loadView) apply(b batch) bool {
	now := v.now()
	old := v.entries
	if b.full {
		v.entries = make(map[string]loadEntry, len(b.events))
	}
	changed := false
	for _, ev := range b.events {
		if ev.name == v.self {
			continue
		}
		prev, had := v.entries[ev.name]
		if b.full {
			prev, had = old[ev.name]
		}
		if ev.deleted {
			delete(v.entries, ev.name)
			changed = changed || (had && prev.fresh)
			continue
		}
		// A re-read returns unchanged records too; they keep their receive
		// time, or a resync would make a silent peer look fresh again.
		if had && prev.modRev == ev.modRev {
			v.entries[ev.name] = prev
			continue
		}
		r, err := DecodeLoadReport(ev.name, ev.value)
		if err != nil {
			v.stats.invalid.Add(1)
			v.log.Warn("etcd: skipping invalid load record", "key_name", ev.name, "mod_revision", ev.modRev, "error", err)
		}
		v.entries[ev.name] = loadEntry{modRev: ev.modRev, report: r, received: now, valid: err == nil}
		changed = changed || err == nil || (had && prev.fresh)
	}
	if b.full {
		for name, e := range old {
			if _, ok := v.entries[name]; !ok && e.fresh {
				changed = true
			}
		}
	}
	return changed
}

// isFresh applies the contract: a record counts for StaleAfterPeriods of
// its own periods after it was received.
func (e loadEntry) isFresh(now time.Time) bool {
	return e.valid && now.Sub(e.received) <= StaleAfterPeriods*e.report.Period()
}

func (v *loadView) expire() bool {
	now := v.now()
	for _, e := range v.entries {
		if e.isFresh(now) != e.fresh {
			return true
		}
	}
	return false
}

func (v *loadView) view() (discovery.PeerLoads, bool) {
	now := v.now()
	out := make(discovery.PeerLoads, 0, len(v.entries))
	for name, e := range v.entries {
		e.fresh = e.isFresh(now)
		v.entries[name] = e
		if e.fresh {
			out = append(out, e.report)
		}
	}
	slices.SortFunc(out, func(a, b discovery.LoadReport) int { return strings.Compare(a.SidecarID, b.SidecarID) })
	return out, true
}

// DecodeLoadReport parses the load record stored under load/<sidecarID>.
// Unknown fields are ignored (newer publishers may add some). The record
// must name the same sidecar as its key and state a positive period, or
// readers could not age it.
func DecodeLoadReport(sidecarID string, value []byte) (discovery.LoadReport, error) {
	var r discovery.LoadReport
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&r); err != nil {
		return discovery.LoadReport{}, fmt.Errorf("%w: load record: %v", ErrInvalidValue, err)
	}
	if dec.More() {
		return discovery.LoadReport{}, fmt.Errorf("%w: load record: trailing data after the JSON object", ErrInvalidValue)
	}
	if r.SidecarID != sidecarID {
		return discovery.LoadReport{}, fmt.Errorf("%w: load record: sidecar_id %q differs from its key's last segment %q", ErrInvalidValue, r.SidecarID, sidecarID)
	}
	if err := validateLoadReport(r); err != nil {
		return discovery.LoadReport{}, err
	}
	return r, nil
}

// validateLoadReport checks what readers rely on: a period to age the record
// by, and instance ids with non-negative counters (a negative count would
// lower every peer's view of an instance's global load).
func validateLoadReport(r discovery.LoadReport) error {
	if r.PeriodMillis <= 0 {
		return fmt.Errorf("%w: load record %q: period_ms %d: must be positive", ErrInvalidValue, r.SidecarID, r.PeriodMillis)
	}
	for i, in := range r.Instances {
		switch {
		case in.ID == "":
			return fmt.Errorf("%w: load record %q: instances[%d].id: required", ErrInvalidValue, r.SidecarID, i)
		case in.InFlight < 0 || in.TokensInFlight < 0 || in.Queued.High < 0 || in.Queued.Normal < 0 || in.Queued.Low < 0:
			return fmt.Errorf("%w: load record %q: instances[%d] (%q): counters must not be negative", ErrInvalidValue, r.SidecarID, i, in.ID)
		}
	}
	return nil
}
