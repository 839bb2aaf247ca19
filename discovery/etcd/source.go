package etcd

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/internal/viewpump"
)

// SourceName is the Snapshot.Source of snapshots from this package.
const SourceName = "etcd"

// Source streams the instances registered under
// <Prefix>/services/<Service>/instances/ as whole snapshots.
type Source struct {
	cfg     Config
	now     func() time.Time
	confirm time.Duration // discovery.ConfirmEvery; shorter in tests
	stats   watchStats
}

var _ discovery.Source = (*Source)(nil)

// NewSource validates cfg and returns a Source. Nothing talks to etcd until
// Watch.
func NewSource(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Source{cfg: cfg.withDefaults(), now: time.Now, confirm: discovery.ConfirmEvery}, nil
}

// Watch implements discovery.Source. The first snapshot follows the first
// successful read of the prefix; later ones follow each change of the set of
// valid instances (a re-write of an identical value sends nothing), and the
// unchanged view is sent again about every discovery.ConfirmEvery as the
// watch's progress notifications confirm it. While etcd is unreachable
// nothing is sent, so the consumer keeps the last view.
// Each call runs its own watch; the channel closes when ctx is done.
func (s *Source) Watch(ctx context.Context) <-chan discovery.Snapshot {
	out := make(chan discovery.Snapshot)
	w := s.cfg.watcher(s.cfg.instancesPrefix(), &s.stats)
	r := &instanceView{entries: map[string]instanceEntry{}, log: s.cfg.Logger, stats: &s.stats, now: s.now}
	go viewpump.Run(ctx, w.run, viewpump.Reducer[batch, discovery.Snapshot](r), nil, s.confirm, out)
	return out
}

// InvalidValues counts values skipped because they failed to decode or
// named another id than their key, once per key and revision per Watch.
func (s *Source) InvalidValues() int64 { return s.stats.invalid.Load() }

// Resyncs counts full re-reads after the first (compaction, errors,
// reconnections), summed over Watch calls.
func (s *Source) Resyncs() int64 { return s.stats.resyncs.Load() }

// Events counts watch events received, summed over Watch calls.
func (s *Source) Events() int64 { return s.stats.events.Load() }

// instanceEntry caches one key's decoded value by revision, so that a
// re-read neither decodes nor logs an unchanged value again.
type instanceEntry struct {
	modRev int64
	in     discovery.Instance
	valid  bool
}

// instanceView is the Source's viewpump.Reducer: the registry's instances by key.
type instanceView struct {
	entries  map[string]instanceEntry
	syncedAt time.Time
	log      *slog.Logger
	stats    *watchStats
	now      func() time.Time
}

func (v *instanceView) Apply(b batch) bool {
	old := v.entries
	if b.full {
		v.entries = make(map[string]instanceEntry, len(b.events))
	}
	changed := false
	for _, ev := range b.events {
		prev, had := v.entries[ev.name]
		if b.full {
			prev, had = old[ev.name]
		}
		if ev.deleted {
			delete(v.entries, ev.name)
			changed = changed || (had && prev.valid)
			continue
		}
		if had && prev.modRev == ev.modRev {
			v.entries[ev.name] = prev
			continue
		}
		in, err := decodeInstanceValue(ev.name, ev.value)
		if err != nil {
			v.stats.invalid.Add(1)
			v.log.Warn("etcd: skipping invalid instance value", "key_name", ev.name, "mod_revision", ev.modRev, "error", err)
		}
		e := instanceEntry{modRev: ev.modRev, in: in, valid: err == nil}
		v.entries[ev.name] = e
		changed = changed || had && (prev.valid != e.valid || (e.valid && !prev.in.Equal(e.in))) || !had && e.valid
	}
	if b.full {
		// A re-read also drops what vanished while we were not watching.
		for name, e := range old {
			if _, ok := v.entries[name]; !ok && e.valid {
				changed = true
			}
		}
	}
	v.syncedAt = v.now()
	return changed
}

func (v *instanceView) Expire() bool { return false }

func (v *instanceView) View() (discovery.Snapshot, bool) {
	list := make([]discovery.Instance, 0, len(v.entries))
	for _, e := range v.entries {
		if e.valid {
			list = append(list, e.in)
		}
	}
	snap, err := discovery.NewSnapshot(SourceName, list, v.syncedAt)
	if err != nil {
		// Unreachable: every entry was validated and ids equal their unique
		// keys. Keep the last view rather than send a broken one.
		v.log.Error("etcd: building snapshot", "error", err)
		return discovery.Snapshot{}, false
	}
	return snap, true
}

// decodeInstanceValue turns the value stored under instances/<name> into an
// Instance. The id in the value must equal name: the key is what a lease
// expiry or a delete removes, so an instance whose id differed from its key
// could not be removed by id, and two keys could claim one id.
func decodeInstanceValue(name string, value []byte) (discovery.Instance, error) {
	in, err := discovery.DecodeInstance(value)
	if err != nil {
		return discovery.Instance{}, fmt.Errorf("%w: %w", ErrInvalidValue, err)
	}
	if in.ID != name {
		return discovery.Instance{}, fmt.Errorf("%w: id %q differs from its key's last segment %q", ErrInvalidValue, in.ID, name)
	}
	return in, nil
}
