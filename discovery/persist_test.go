package discovery_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

// persistWait bounds every wait of these tests; each step takes
// microseconds, so hitting it means a bug.
const persistWait = 5 * time.Second

// chanSource is a discovery.Source fed by hand: the test sends on feed, and
// Watch forwards until ctx ends. A source that is never fed is a registry
// that never answers.
type chanSource struct {
	feed chan discovery.Snapshot
	// buffered, when set, is returned by Watch as is (the test fills it
	// before Watch), to control exactly when a snapshot is available.
	buffered chan discovery.Snapshot
}

func (c *chanSource) Watch(ctx context.Context) <-chan discovery.Snapshot {
	if c.buffered != nil {
		return c.buffered
	}
	out := make(chan discovery.Snapshot)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-c.feed:
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func snapshotOf(t *testing.T, source string, ids ...string) discovery.Snapshot {
	t.Helper()
	var list []discovery.Instance
	for i, id := range ids {
		list = append(list, discovery.Instance{ID: id, Address: "10.0.0." + string(rune('1'+i)) + ":8000", Models: []string{"m"}})
	}
	snap, err := discovery.NewSnapshot(source, list, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	return snap
}

// recv receives one snapshot or fails at the deadline.
func recv(t *testing.T, ch <-chan discovery.Snapshot) discovery.Snapshot {
	t.Helper()
	select {
	case s, ok := <-ch:
		if !ok {
			t.Fatal("channel closed")
		}
		return s
	case <-time.After(persistWait):
		t.Fatal("no snapshot within the deadline")
	}
	return discovery.Snapshot{}
}

// watch starts w.Watch and, at cleanup, cancels it and checks that the
// channel closes (the goroutine ended).
func watch(t *testing.T, w discovery.Source) <-chan discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := w.Watch(ctx)
	t.Cleanup(func() {
		cancel()
		deadline := time.After(persistWait)
		for {
			select {
			case _, ok := <-ch:
				if !ok {
					return
				}
			case <-deadline:
				t.Error("Watch channel not closed after cancel")
				return
			}
		}
	})
	return ch
}

// logSink collects log lines for assertions.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logSink) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func TestLoadPersisted(t *testing.T) {
	const inst = `{"id":"a","address":"h:1","models":["m"]}`
	tests := []struct {
		name   string
		data   string
		want   []string // instance ids, when valid
		substr string   // "" means valid
	}{
		{name: "valid", data: `{"version":1,"source":"etcd","synced_at":"2025-01-02T03:04:05Z","instances":[` + inst + `]}`, want: []string{"a"}},
		{name: "unsorted input is sorted", data: `{"version":1,"source":"etcd","instances":[{"id":"b","address":"h:2","models":["m"]},` + inst + `]}`, want: []string{"a", "b"}},
		{name: "empty list", data: `{"version":1,"source":"etcd","instances":[]}`, want: []string{}},
		{name: "unknown fields ignored", data: `{"version":1,"source":"etcd","instances":[],"written_by":"x"}`, want: []string{}},
		{name: "empty file", data: "", substr: "EOF"},
		{name: "truncated", data: `{"version":1,"source":"etcd","instances":[` + inst, substr: "unexpected EOF"},
		{name: "not json", data: "version: 1", substr: "invalid character"},
		{name: "trailing data", data: `{"version":1,"source":"etcd","instances":[]} {}`, substr: "trailing data"},
		{name: "no version", data: `{"source":"etcd","instances":[]}`, substr: "version 0"},
		{name: "future version", data: `{"version":2,"source":"etcd","instances":[]}`, substr: "version 2"},
		{name: "no source", data: `{"version":1,"instances":[]}`, substr: "source: required"},
		{name: "no instances", data: `{"version":1,"source":"etcd"}`, substr: "instances: required"},
		{name: "null instances", data: `{"version":1,"source":"etcd","instances":null}`, substr: "instances: required"},
		{name: "invalid instance", data: `{"version":1,"source":"etcd","instances":[{"id":"a","address":"h","models":["m"]}]}`, substr: "address"},
		{name: "duplicate ids", data: `{"version":1,"source":"etcd","instances":[` + inst + `,` + inst + `]}`, substr: "duplicate"},
		{name: "wrong type", data: `{"version":"1","source":"etcd","instances":[]}`, substr: "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snap.json")
			if err := os.WriteFile(path, []byte(tt.data), 0o600); err != nil {
				t.Fatal(err)
			}
			snap, err := discovery.LoadPersisted(path)
			if tt.substr != "" {
				if err == nil {
					t.Fatalf("LoadPersisted = %+v, want an error", snap)
				}
				if !errors.Is(err, discovery.ErrInvalidPersisted) {
					t.Errorf("error %q is not ErrInvalidPersisted", err)
				}
				if !strings.Contains(err.Error(), tt.substr) {
					t.Errorf("error %q does not contain %q", err, tt.substr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadPersisted: %v", err)
			}
			if !snap.Stale || snap.Source != "etcd" {
				t.Errorf("snapshot Stale=%v Source=%q, want stale from etcd", snap.Stale, snap.Source)
			}
			ids := []string{}
			for _, in := range snap.Instances {
				ids = append(ids, in.ID)
			}
			if diff := cmp.Diff(tt.want, ids); diff != "" {
				t.Errorf("instances (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadPersistedMissingFile(t *testing.T) {
	_, err := discovery.LoadPersisted(filepath.Join(t.TempDir(), "none.json"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestSavePersistedRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested") // created on demand
	path := filepath.Join(dir, "snapshot-etcd.json")
	want := snapshotOf(t, "etcd", "a", "b")
	want.Instances[0].Meta = map[string]string{"zone": "a"}
	want.Instances[1].Draining, want.Instances[1].Weight = true, 3
	if err := discovery.SavePersisted(path, want); err != nil {
		t.Fatalf("SavePersisted: %v", err)
	}
	got, err := discovery.LoadPersisted(path)
	if err != nil {
		t.Fatalf("LoadPersisted: %v", err)
	}
	want.Stale = true
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// Overwrite: the rename replaces the file, and no temporary is left.
	if err := discovery.SavePersisted(path, snapshotOf(t, "etcd")); err != nil {
		t.Fatalf("SavePersisted again: %v", err)
	}
	if got, err := discovery.LoadPersisted(path); err != nil || len(got.Instances) != 0 {
		t.Errorf("after overwrite: %d instances, err %v; want 0, nil", len(got.Instances), err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "snapshot-etcd.json" {
		t.Errorf("directory holds %v, want only snapshot-etcd.json", entries)
	}
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte(`"version": 1`)) {
		t.Errorf("file lacks the version field:\n%s", data)
	}
}

func TestSavePersistedRefusesStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap.json")
	snap := snapshotOf(t, "etcd", "a")
	snap.Stale = true
	if err := discovery.SavePersisted(path, snap); err == nil {
		t.Fatal("SavePersisted of a stale snapshot succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file was written: %v", err)
	}
}

// A write that fails leaves what was at the path untouched and no temporary
// file behind. The failure is a rename onto a non-empty directory, which
// fails for root too (a read-only directory would not stop root, and CI runs
// as root).
func TestSavePersistedFailureLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snap.json")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(path, "keep")
	if err := os.WriteFile(marker, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := discovery.SavePersisted(path, snapshotOf(t, "etcd", "b")); err == nil {
		t.Fatal("SavePersisted over a non-empty directory succeeded")
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "old" {
		t.Errorf("what was at the path changed: %q, %v", b, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left behind: %v, want only snap.json", names)
	}
}

// The registry is down: the source never sends. The persisted snapshot
// arrives at once, stale; when the registry answers, its snapshot replaces
// it and is persisted.
func TestPersistServesStaleWhileRegistryDown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot-etcd.json")
	old := snapshotOf(t, "etcd", "a", "b")
	if err := discovery.SavePersisted(path, old); err != nil {
		t.Fatal(err)
	}
	src := &chanSource{feed: make(chan discovery.Snapshot)}
	ch := watch(t, discovery.Persist(src, path, slog.New(slog.DiscardHandler)))

	got := recv(t, ch)
	want := old
	want.Stale = true
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("first snapshot (-want +got):\n%s", diff)
	}

	fresh := snapshotOf(t, "etcd", "c")
	fresh.SyncedAt = time.Now().UTC()
	src.feed <- fresh
	got = recv(t, ch)
	if diff := cmp.Diff(fresh, got); diff != "" {
		t.Fatalf("registry snapshot (-want +got):\n%s", diff)
	}
	// The file is written after the send: poll for it.
	deadline := time.Now().Add(persistWait)
	for {
		onDisk, err := discovery.LoadPersisted(path)
		if err == nil && len(onDisk.Instances) == 1 && onDisk.Instances[0].ID == "c" {
			if !onDisk.SyncedAt.Equal(fresh.SyncedAt) {
				t.Errorf("persisted synced_at %v, want %v", onDisk.SyncedAt, fresh.SyncedAt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fresh snapshot not persisted: %+v, %v", onDisk, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPersistSourceCases(t *testing.T) {
	tests := []struct {
		name string
		file string // "" means no file
		// wantLog must appear in the logs.
		wantLog string
	}{
		{name: "no file", wantLog: "no persisted snapshot yet"},
		{name: "corrupt file", file: `{"version":1,"source":"etcd","instances":[`, wantLog: "ignoring the persisted snapshot"},
		{name: "other version", file: `{"version":9,"source":"etcd","instances":[]}`, wantLog: "version 9"},
		{name: "unreadable (a directory)", file: "<dir>", wantLog: "ignoring the persisted snapshot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snap.json")
			switch tt.file {
			case "":
			case "<dir>":
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			default:
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var logs logSink
			src := &chanSource{feed: make(chan discovery.Snapshot)}
			ch := watch(t, discovery.Persist(src, path, logs.logger()))
			// Nothing usable on disk: nothing is sent before the registry.
			select {
			case s := <-ch:
				t.Fatalf("sent %+v before the registry answered", s)
			case <-time.After(20 * time.Millisecond):
			}
			fresh := snapshotOf(t, "etcd", "a")
			src.feed <- fresh
			if got := recv(t, ch); got.Stale || len(got.Instances) != 1 {
				t.Errorf("got %+v, want the registry's snapshot", got)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("logs lack %q:\n%s", tt.wantLog, logs.String())
			}
			if tt.file == "<dir>" {
				return // cannot be replaced by a file; the failure is logged
			}
			deadline := time.Now().Add(persistWait)
			for {
				if s, err := discovery.LoadPersisted(path); err == nil && len(s.Instances) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the registry's snapshot did not replace the bad file")
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// A registry snapshot that arrives before the consumer took the stale one
// replaces it: the consumer never routes on an older view than it could.
func TestPersistDropsStaleOnceRegistryAnswered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap.json")
	if err := discovery.SavePersisted(path, snapshotOf(t, "etcd", "old")); err != nil {
		t.Fatal(err)
	}
	buffered := make(chan discovery.Snapshot, 1)
	buffered <- snapshotOf(t, "etcd", "new")
	ch := watch(t, discovery.Persist(&chanSource{buffered: buffered}, path, slog.New(slog.DiscardHandler)))
	deadline := time.Now().Add(persistWait)
	for len(buffered) > 0 { // the wrapper has taken the registry's snapshot
		if time.Now().After(deadline) {
			t.Fatal("the wrapper did not read its source")
		}
		time.Sleep(time.Millisecond)
	}
	if got := recv(t, ch); got.Stale || got.Instances[0].ID != "new" {
		t.Errorf("got %+v, want the registry's snapshot, not the stale one", got)
	}
}

// A stale snapshot from the wrapped source (a wrapper around a wrapper) is
// forwarded but never persisted.
func TestPersistNeverPersistsStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap.json")
	src := &chanSource{feed: make(chan discovery.Snapshot)}
	ch := watch(t, discovery.Persist(src, path, slog.New(slog.DiscardHandler)))
	stale := snapshotOf(t, "etcd", "a")
	stale.Stale = true
	src.feed <- stale
	if got := recv(t, ch); !got.Stale {
		t.Errorf("Stale dropped: %+v", got)
	}
	// The loop is sequential: once a second snapshot went through it, the
	// first one's turn, write included, is over.
	stale2 := snapshotOf(t, "etcd", "b")
	stale2.Stale = true
	src.feed <- stale2
	recv(t, ch)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a stale snapshot was persisted (stat: %v)", err)
	}
}

func TestPersistClosesWithItsSource(t *testing.T) {
	in := make(chan discovery.Snapshot)
	close(in)
	ch := discovery.Persist(&chanSource{buffered: in}, filepath.Join(t.TempDir(), "s.json"), slog.New(slog.DiscardHandler)).Watch(context.Background())
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("sent a snapshot from a closed source")
		}
	case <-time.After(persistWait):
		t.Fatal("channel not closed after its source closed")
	}
}

// TestPersistWritesConfirmationsRarely: a confirmation of an unchanged view
// (same instances, later SyncedAt) does not rewrite the file, unless the
// file's synced_at is persistRefresh old.
func TestPersistWritesConfirmationsRarely(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot-etcd.json")
	src := &chanSource{feed: make(chan discovery.Snapshot)}
	ch := watch(t, discovery.Persist(src, path, slog.New(slog.DiscardHandler)))
	base := snapshotOf(t, "etcd", "a")
	at := func(d time.Duration) discovery.Snapshot { s := base; s.SyncedAt = base.SyncedAt.Add(d); return s }
	onDisk := func() (discovery.Snapshot, os.FileInfo) {
		t.Helper()
		s, err := discovery.LoadPersisted(path)
		fi, serr := os.Stat(path)
		if err != nil || serr != nil {
			return discovery.Snapshot{}, nil
		}
		return s, fi
	}
	src.feed <- at(0)
	recv(t, ch)
	var written os.FileInfo
	for deadline := time.Now().Add(persistWait); written == nil; time.Sleep(time.Millisecond) {
		if _, written = onDisk(); time.Now().After(deadline) {
			t.Fatal("first snapshot not persisted")
		}
	}
	// Two confirmations: the second is only received once the loop has
	// handled the first, write or not.
	for _, d := range []time.Duration{time.Minute, 2 * time.Minute} {
		src.feed <- at(d)
		recv(t, ch)
	}
	if snap, fi := onDisk(); fi == nil || !os.SameFile(fi, written) || !snap.SyncedAt.Equal(base.SyncedAt) {
		t.Fatalf("a confirmation rewrote the file (synced_at %v)", snap.SyncedAt)
	}
	src.feed <- at(11 * time.Minute)
	recv(t, ch)
	for deadline := time.Now().Add(persistWait); ; time.Sleep(time.Millisecond) {
		if snap, _ := onDisk(); snap.SyncedAt.Equal(at(11 * time.Minute).SyncedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a confirmation persistRefresh after the last write was not written")
		}
	}
}
