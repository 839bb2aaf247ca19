package discovery

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Snapshot is a whole, consistent view of one service's instances at one
// moment. Snapshots are values: a consumer may keep one as long as it likes,
// and a source never mutates one it has sent.
type Snapshot struct {
	// Source names the registry that produced it ("static", "etcd", ...).
	Source string
	// Instances are sorted by ID, valid, and unique by ID.
	Instances []Instance
	// SyncedAt is when the source last confirmed this view with its registry.
	SyncedAt time.Time
	// Stale is true when the view was restored from disk and the registry has
	// not confirmed it yet (static stability while the registry is down).
	Stale bool
}

// NewSnapshot validates instances, rejects duplicate ids and returns them as
// a snapshot sorted by ID. The first invalid instance is reported by
// position and id so an operator can find it.
func NewSnapshot(source string, instances []Instance, syncedAt time.Time) (Snapshot, error) {
	out := make([]Instance, len(instances))
	copy(out, instances)
	for i, in := range out {
		if err := in.Validate(); err != nil {
			return Snapshot{}, fmt.Errorf("entry %d: %w", i, err)
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	for i := 1; i < len(out); i++ {
		if out[i].ID == out[i-1].ID {
			return Snapshot{}, fmt.Errorf("%w: %q", ErrDuplicateID, out[i].ID)
		}
	}
	return Snapshot{Source: source, Instances: out, SyncedAt: syncedAt}, nil
}

// Source is a registry seen as a stream of whole snapshots.
//
// Watch sends the first snapshot once the source has completed its first
// sync, then a new snapshot whenever the view changes, and the unchanged
// view again, with a later SyncedAt, about every ConfirmEvery while the
// registry keeps confirming it: SyncedAt then says how fresh the view is
// even when nothing changes. A source handles its
// registry's errors itself (backing off with a cap) and keeps the last good
// view: the stream only ever carries complete, valid snapshots. Watch closes
// the channel when ctx is done and sends only inside a select on ctx.Done().
type Source interface {
	Watch(ctx context.Context) <-chan Snapshot
}

// ConfirmEvery is how often a source re-sends an unchanged view that its
// registry confirmed (at most; a registry that answers less often confirms
// less often).
const ConfirmEvery = 30 * time.Second
