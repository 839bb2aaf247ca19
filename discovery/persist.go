package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// PersistVersion is the format version of a persisted snapshot file. A file
// of another version is ignored (and replaced by the next good snapshot).
const PersistVersion = 1

// maxPersistedBytes bounds the file read at start: a fleet's instance list
// is kilobytes, so anything larger is not ours.
const maxPersistedBytes = 64 << 20

// persistedSnapshot is the file format: versioned, so that a later format
// can be told apart instead of misread.
type persistedSnapshot struct {
	Version   int        `json:"version"`
	Source    string     `json:"source"`
	SyncedAt  time.Time  `json:"synced_at"`
	Instances []Instance `json:"instances"`
}

// PersistentSource wraps a Source for static stability: it keeps the last
// snapshot the registry confirmed in a file, and a sidecar that starts while
// the registry is unreachable routes on that file (marked Stale) until the
// registry answers. Create it with Persist.
type PersistentSource struct {
	src  Source
	path string
	log  *slog.Logger
}

var _ Source = (*PersistentSource)(nil)

// Persist returns src wrapped so that its snapshots are persisted to path
// (a file in the sidecar's state directory, one per registry) and the
// persisted one is served, Stale, until src sends its first. A nil logger
// means slog.Default().
func Persist(src Source, path string, logger *slog.Logger) *PersistentSource {
	if logger == nil {
		logger = slog.Default()
	}
	return &PersistentSource{src: src, path: path, log: logger}
}

// persistRefresh is how often a confirmed but unchanged view is written
// again (a changed one is written at once).
const persistRefresh = 10 * time.Minute

// Watch implements Source. If the file holds a valid snapshot, it is sent
// first with Stale set (its SyncedAt is when the registry last confirmed
// it). Then every snapshot of the wrapped source is forwarded unchanged and,
// unless Stale itself, written to the file atomically once the consumer has
// it when it changed the view (confirmations of an unchanged view are
// written only every persistRefresh, so writes are rare). A stale snapshot not
// yet received when the source's first one arrives is dropped, and so is any
// snapshot superseded before the consumer took it: snapshots are whole
// views, so only the newest matters. A missing, unreadable or corrupt file
// is logged and ignored, and a failed write is logged and leaves the old
// file in place: persistence never stops routing. The channel closes when
// ctx is done (or the wrapped source's channel closes).
func (p *PersistentSource) Watch(ctx context.Context) <-chan Snapshot {
	out := make(chan Snapshot)
	go p.run(ctx, out)
	return out
}

func (p *PersistentSource) run(ctx context.Context, out chan<- Snapshot) {
	defer close(out)
	var pending *Snapshot
	if snap, err := LoadPersisted(p.path); err == nil {
		p.log.Info("discovery: serving the persisted snapshot until the registry answers",
			"path", p.path, "source", snap.Source, "synced_at", snap.SyncedAt, "instances", len(snap.Instances))
		pending = &snap
	} else if errors.Is(err, fs.ErrNotExist) {
		p.log.Info("discovery: no persisted snapshot yet", "path", p.path)
	} else {
		p.log.Warn("discovery: ignoring the persisted snapshot", "path", p.path, "err", err)
	}

	in := p.src.Watch(ctx)
	var saved Snapshot // the last snapshot written
	for {
		var send chan<- Snapshot // nil: the send case is off
		var next Snapshot
		if pending != nil {
			send, next = out, *pending
		}
		select {
		case <-ctx.Done():
			return
		case snap, ok := <-in:
			if !ok {
				return
			}
			pending = &snap
		case send <- next:
			pending = nil
			if next.Stale {
				continue
			}
			// Confirmations of an unchanged view rewrite the file only now
			// and then, to keep its synced_at roughly current.
			if slices.EqualFunc(saved.Instances, next.Instances, Instance.Equal) && next.SyncedAt.Sub(saved.SyncedAt) < persistRefresh {
				continue
			}
			// After the send, so that a slow disk never delays routing.
			if err := SavePersisted(p.path, next); err != nil {
				p.log.Warn("discovery: persisting the snapshot failed; the previous file stays", "path", p.path, "err", err)
				continue
			}
			saved = next
		}
	}
}

// LoadPersisted reads a snapshot written by SavePersisted and returns it
// with Stale set. Errors wrap fs.ErrNotExist when there is no file, and
// ErrInvalidPersisted when the file is not a valid snapshot of this
// version.
func LoadPersisted(path string) (Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("discovery: read persisted snapshot: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPersistedBytes+1))
	if err != nil {
		return Snapshot{}, fmt.Errorf("discovery: read persisted snapshot: %w", err)
	}
	if len(data) > maxPersistedBytes {
		return Snapshot{}, fmt.Errorf("%w: larger than %d bytes", ErrInvalidPersisted, maxPersistedBytes)
	}
	return decodePersisted(data)
}

// decodePersisted is LoadPersisted without the file: pure, so that it is
// table-tested.
func decodePersisted(data []byte) (Snapshot, error) {
	var ps persistedSnapshot
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&ps); err != nil {
		return Snapshot{}, fmt.Errorf("%w: %v", ErrInvalidPersisted, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Snapshot{}, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidPersisted)
	}
	if ps.Version != PersistVersion {
		return Snapshot{}, fmt.Errorf("%w: version %d: want %d", ErrInvalidPersisted, ps.Version, PersistVersion)
	}
	if ps.Source == "" {
		return Snapshot{}, fmt.Errorf("%w: source: required", ErrInvalidPersisted)
	}
	if ps.Instances == nil {
		return Snapshot{}, fmt.Errorf("%w: instances: required (an empty list is valid)", ErrInvalidPersisted)
	}
	snap, err := NewSnapshot(ps.Source, ps.Instances, ps.SyncedAt)
	if err != nil {
		return Snapshot{}, fmt.Errorf("%w: instances: %w", ErrInvalidPersisted, err)
	}
	snap.Stale = true
	return snap, nil
}

// SavePersisted writes snap to path atomically: a temporary file in the
// same directory is written and synced, then renamed over path, and the
// directory is synced, so that a crash leaves either the old file or the
// new one, never a torn one. The directory is created (0700) if missing.
// A Stale snapshot is refused: only what a registry confirmed is persisted.
func SavePersisted(path string, snap Snapshot) error {
	if snap.Stale {
		return fmt.Errorf("discovery: persist snapshot: refusing a stale snapshot")
	}
	instances := snap.Instances
	if instances == nil {
		instances = []Instance{}
	}
	data, err := json.MarshalIndent(persistedSnapshot{Version: PersistVersion, Source: snap.Source, SyncedAt: snap.SyncedAt, Instances: instances}, "", "  ")
	if err != nil {
		return fmt.Errorf("discovery: persist snapshot: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("discovery: persist snapshot: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("discovery: persist snapshot: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("discovery: persist snapshot: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("discovery: persist snapshot: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("discovery: persist snapshot: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("discovery: persist snapshot: %w", err)
	}
	renamed = true
	// The rename is durable only once the directory entry is.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
