package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
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
	r := &loadView{entries: map[string]loadEntry{}, prefix: prefix, self: l.cfg.SidecarID, now: l.cfg.Now, log: l.cfg.Logger, stats: &l.stats}
	tick, stop := l.cfg.NewTicker(l.cfg.CheckInterval)
	go func() {
		defer stop()
		pump(ctx, q, reducer[api.KVPairs, discovery.PeerLoads](r), tick, out)
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

// loadEntry is one peer's record with the time this sidecar received it.
// Receive time, not a timestamp in the record, ages it: clocks of different
// hosts need not agree.
type loadEntry struct {
	modifyIndex uint64
	report      discovery.LoadReport
	received    time.Time
	valid       bool
	fresh       bool // as of the last view built; expire compares against it
}

// isFresh applies the contract: a record counts for StaleAfterPeriods of
// its own periods after it was received.
func (e loadEntry) isFresh(now time.Time) bool {
	return e.valid && now.Sub(e.received) <= StaleAfterPeriods*e.report.Period()
}

// loadView is the LoadSource's reducer. Every answer is the whole prefix.
type loadView struct {
	entries map[string]loadEntry
	prefix  string
	self    string
	now     func() time.Time
	log     *slog.Logger
	stats   *queryStats
}

func (v *loadView) apply(pairs api.KVPairs) bool {
	now := v.now()
	old := v.entries
	v.entries = make(map[string]loadEntry, len(pairs))
	changed := false
	for _, p := range pairs {
		name, ok := strings.CutPrefix(p.Key, v.prefix)
		if !ok || name == "" || strings.Contains(name, "/") || name == v.self {
			continue // not a record of a peer (a folder, a nested key, ours)
		}
		prev, had := old[name]
		// An unchanged record keeps its receive time, or every answer would
		// make a silent peer look fresh again.
		if had && prev.modifyIndex == p.ModifyIndex {
			v.entries[name] = prev
			continue
		}
		r, err := DecodeLoadReport(name, p.Value)
		if err != nil {
			v.stats.invalid.Add(1)
			v.log.Warn("consul: skipping invalid load record", "key", p.Key, "modify_index", p.ModifyIndex, "error", err)
		}
		v.entries[name] = loadEntry{modifyIndex: p.ModifyIndex, report: r, received: now, valid: err == nil}
		changed = changed || err == nil || (had && prev.fresh)
	}
	for name, e := range old {
		if _, ok := v.entries[name]; !ok && e.fresh {
			changed = true
		}
	}
	return changed
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
	// More() would miss a stray "}" or "]"; only EOF means nothing follows.
	if _, err := dec.Token(); err != io.EOF {
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
