package static

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/blitzscale/router/discovery"
)

const (
	testPoll = 5 * time.Millisecond
	deadline = 5 * time.Second
)

// fileOf renders one valid instance per id. Ids of equal length give files
// of equal size, which the rename and racy-mtime tests rely on.
func fileOf(ids ...string) string {
	var b strings.Builder
	for i, id := range ids {
		fmt.Fprintf(&b, "- {id: %s, address: '10.0.0.%d:8000', models: [m]}\n", id, i+1)
	}
	if b.Len() == 0 {
		return "[]\n"
	}
	return b.String()
}

const invalidFile = "- {id: gpu-a, address: x, models: [m]}\n"

// writeInPlace truncates and rewrites path, keeping its inode.
func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceByRename writes content to a temporary file in the same directory
// and renames it over path, as careful writers do. mtime, if not zero, is
// set on the new file first.
func replaceByRename(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), ".static-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(f.Name(), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(f.Name(), path); err != nil {
		t.Fatal(err)
	}
}

// logRecorder counts log records by level so tests can assert that a
// persistent failure is logged once, not at every poll.
type logRecorder struct {
	mu    sync.Mutex
	count map[slog.Level]int
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.count == nil {
		r.count = map[slog.Level]int{}
	}
	r.count[rec.Level]++
	return nil
}

func (r *logRecorder) warnings() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[slog.LevelWarn]
}

// harness is one watched file.
type harness struct {
	t    *testing.T
	path string
	src  *Source
	log  *logRecorder
	ch   <-chan discovery.Snapshot
}

// newHarness writes content (none if empty) and starts watching; cleanup
// cancels and waits for the channel to close, so goleak sees no loop left.
func newHarness(t *testing.T, content string) *harness {
	t.Helper()
	path := filepath.Join(t.TempDir(), "instances.yaml")
	if content != "" {
		writeInPlace(t, path, content)
	}
	return watchPath(t, path)
}

func watchPath(t *testing.T, path string) *harness {
	t.Helper()
	return watchPathWith(t, path, func(*Source) {})
}

// watchPathWith is watchPath with the Source adjusted by set before Watch.
func watchPathWith(t *testing.T, path string, set func(*Source)) *harness {
	t.Helper()
	h := &harness{t: t, path: path, log: &logRecorder{}}
	h.src = &Source{Path: path, PollInterval: testPoll, Logger: slog.New(h.log)}
	set(h.src)
	ctx, cancel := context.WithCancel(context.Background())
	h.ch = h.src.Watch(ctx)
	t.Cleanup(func() {
		cancel()
		waitClosed(t, h.ch)
	})
	return h
}

func waitClosed(t *testing.T, ch <-chan discovery.Snapshot) {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatal("channel not closed after cancel")
		}
	}
}

// next waits for a snapshot and checks its ids.
func (h *harness) next(want ...string) discovery.Snapshot {
	h.t.Helper()
	select {
	case snap, ok := <-h.ch:
		if !ok {
			h.t.Fatal("channel closed")
		}
		if diff := cmp.Diff(want, ids(snap), cmpopts.EquateEmpty()); diff != "" {
			h.t.Fatalf("snapshot ids (-want +got):\n%s", diff)
		}
		if snap.Source != SourceName {
			h.t.Errorf("Source = %q", snap.Source)
		}
		return snap
	case <-time.After(deadline):
		h.t.Fatalf("no snapshot within %v (last error: %v)", deadline, h.src.LastError())
	}
	return discovery.Snapshot{}
}

// waitPolls waits until the loop has completed n more polls.
func (h *harness) waitPolls(n int64) {
	h.t.Helper()
	target := h.src.polls.Load() + n
	h.waitFor(func() bool { return h.src.polls.Load() >= target }, fmt.Sprintf("%d polls", n))
}

// none asserts that several polls pass without a snapshot.
func (h *harness) none() {
	h.t.Helper()
	h.waitPolls(3)
	select {
	case snap := <-h.ch:
		h.t.Fatalf("unexpected snapshot %v", ids(snap))
	case <-time.After(3 * testPoll):
	}
}

func (h *harness) waitFor(cond func() bool, what string) {
	h.t.Helper()
	for end := time.Now().Add(deadline); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *harness) waitRejected(n int64) {
	h.t.Helper()
	h.waitFor(func() bool { return h.src.Rejected() == n }, fmt.Sprintf("Rejected() == %d", n))
}

func TestWatchInitialSnapshot(t *testing.T) {
	h := newHarness(t, fileOf("gpu-b", "gpu-a"))
	snap := h.next("gpu-a", "gpu-b") // sorted by id
	if snap.SyncedAt.IsZero() {
		t.Error("SyncedAt is zero")
	}
	if err := h.src.LastError(); err != nil {
		t.Errorf("LastError = %v", err)
	}
}

func TestWatchEmptyListIsASnapshot(t *testing.T) {
	h := newHarness(t, "[]\n")
	h.next()
}

func TestWatchInPlaceRewrite(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")
	writeInPlace(t, h.path, fileOf("gpu-a", "gpu-b"))
	h.next("gpu-a", "gpu-b")
}

func TestWatchAtomicRename(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")
	replaceByRename(t, h.path, fileOf("gpu-a", "gpu-c"), time.Time{})
	h.next("gpu-a", "gpu-c")
}

// A new file with the same size and mtime differs only by inode.
func TestWatchAtomicRenameSameSizeAndMtime(t *testing.T) {
	old := time.Now().Add(-time.Hour).Truncate(time.Second) // outside racyWindow
	path := filepath.Join(t.TempDir(), "instances.yaml")
	replaceByRename(t, path, fileOf("gpu-a"), old)
	h := watchPath(t, path)

	h.next("gpu-a")
	h.waitPolls(2) // the loop now trusts the old file's stat
	replaceByRename(t, path, fileOf("gpu-b"), old)
	h.next("gpu-b")
}

// Regression: on a filesystem that rounds mtimes to the second, a same-size
// rewrite within that second keeps size, mtime and inode; only re-reading a
// recently modified file notices it.
func TestWatchRewriteWithinMtimeGranularity(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	stamp := time.Now().Truncate(time.Second)
	if err := os.Chtimes(h.path, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	h.next("gpu-a")
	writeInPlace(t, h.path, fileOf("gpu-b"))
	if err := os.Chtimes(h.path, stamp, stamp); err != nil {
		t.Fatal(err)
	}
	h.next("gpu-b")
}

func TestWatchUnchangedRewriteSendsNothing(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")
	writeInPlace(t, h.path, fileOf("gpu-a"))
	h.none()
	replaceByRename(t, h.path, fileOf("gpu-a"), time.Time{})
	h.none()
	if n := h.src.Rejected(); n != 0 {
		t.Errorf("Rejected = %d", n)
	}
}

func TestWatchInvalidKeepsLastGoodThenRecovers(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")

	writeInPlace(t, h.path, invalidFile)
	h.waitRejected(1)
	h.none()
	if err := h.src.LastError(); !errors.Is(err, discovery.ErrInvalidInstance) || !strings.Contains(err.Error(), "entry 0") {
		t.Errorf("LastError = %v, want the invalid entry", err)
	}
	if n := h.log.warnings(); n != 1 {
		t.Errorf("%d warnings after several polls of one bad version, want 1", n)
	}

	// The same bad bytes again count nothing; different bad bytes count.
	writeInPlace(t, h.path, invalidFile)
	h.none()
	writeInPlace(t, h.path, "- {id: gpu-a, address: 'h:1', modles: [m]}\n")
	h.waitRejected(2)

	writeInPlace(t, h.path, fileOf("gpu-a", "gpu-b"))
	h.next("gpu-a", "gpu-b")
	if err := h.src.LastError(); err != nil {
		t.Errorf("LastError after the fix = %v", err)
	}
	if n := h.src.Rejected(); n != 2 {
		t.Errorf("Rejected = %d, want 2", n)
	}
}

// Going back to the content being served clears the error but sends
// nothing: consumers already hold that view.
func TestWatchRevertToServedContent(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")
	writeInPlace(t, h.path, "")
	h.waitRejected(1)
	if !errors.Is(h.src.LastError(), ErrEmpty) {
		t.Errorf("LastError = %v, want ErrEmpty", h.src.LastError())
	}
	writeInPlace(t, h.path, fileOf("gpu-a"))
	h.waitFor(func() bool { return h.src.LastError() == nil }, "LastError cleared")
	h.none()
}

func TestWatchDeletedFileKeepsLastGood(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.next("gpu-a")
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	h.waitRejected(1)
	h.none()
	if err := h.src.LastError(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LastError = %v, want not-exist", err)
	}
	if n := h.log.warnings(); n != 1 {
		t.Errorf("%d warnings for one missing file, want 1", n)
	}
	writeInPlace(t, h.path, fileOf("gpu-b"))
	h.next("gpu-b")
}

func TestWatchNothingBeforeFirstValidRead(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" means no file
	}{
		{"missing file", ""},
		{"invalid file", invalidFile},
		{"comments only", "# being written\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.content)
			h.waitRejected(1)
			h.none()
			writeInPlace(t, h.path, fileOf("gpu-a"))
			h.next("gpu-a")
		})
	}
}

// A receiver that falls behind gets the newest view, not a backlog.
func TestWatchSlowReceiverGetsLatest(t *testing.T) {
	h := newHarness(t, fileOf("gpu-a"))
	h.waitPolls(1)
	writeInPlace(t, h.path, fileOf("gpu-a", "gpu-b"))
	h.waitPolls(3)
	writeInPlace(t, h.path, fileOf("gpu-a", "gpu-b", "gpu-c"))
	h.waitPolls(3)
	h.next("gpu-a", "gpu-b", "gpu-c")
	h.none()
}

func TestWatchCancelClosesChannel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	writeInPlace(t, path, fileOf("gpu-a"))
	src := &Source{Path: path, PollInterval: testPoll, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	ch := src.Watch(ctx)
	<-ch
	cancel()
	waitClosed(t, ch)

	// Cancelled while a snapshot is pending: the send must not block.
	ctx, cancel = context.WithCancel(context.Background())
	ch = src.Watch(ctx)
	cancel()
	waitClosed(t, ch)
}

func TestSourceValidate(t *testing.T) {
	tests := []struct {
		name  string
		src   *Source
		field string // "" means valid
	}{
		{"defaults", New("x.yaml"), ""},
		{"interval", &Source{Path: "x.yaml", PollInterval: time.Millisecond}, ""},
		{"no path", &Source{}, "Path"},
		{"negative interval", &Source{Path: "x.yaml", PollInterval: -time.Second}, "PollInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.src.Validate()
			switch {
			case tt.field == "" && err != nil:
				t.Errorf("Validate = %v", err)
			case tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field)):
				t.Errorf("Validate = %v, want an error naming %s", err, tt.field)
			}
		})
	}
}

func TestWatchInvalidSettingsSendNothing(t *testing.T) {
	src := &Source{Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	ch := src.Watch(ctx)
	for end := time.Now().Add(deadline); src.LastError() == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("LastError stays nil")
		}
	}
	if !strings.Contains(src.LastError().Error(), "Path") {
		t.Errorf("LastError = %v, want it to name Path", src.LastError())
	}
	cancel()
	waitClosed(t, ch)
}

// A file caught for one poll mid-write (truncated, or missing during an
// editor's delete-and-create save) is not a rejected version; the same
// failure on the next poll is. Driven poll by poll, without the loop.
func TestPollConfirmsFailuresBeforeCounting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	src := &Source{Path: path}
	w := &watcher{src: src, log: slog.New(slog.DiscardHandler)}
	poll := func(wantSnap bool) {
		t.Helper()
		if _, ok := w.poll(); ok != wantSnap {
			t.Fatalf("poll sent = %v, want %v", ok, wantSnap)
		}
	}

	writeInPlace(t, path, "") // truncated, about to be written
	poll(false)
	writeInPlace(t, path, fileOf("gpu-a"))
	poll(true)
	if n := src.Rejected(); n != 0 || src.LastError() != nil {
		t.Fatalf("after a transient empty file: Rejected = %d, LastError = %v", n, src.LastError())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	poll(false)
	if n := src.Rejected(); n != 0 {
		t.Fatalf("Rejected = %d after one poll of a missing file, want 0", n)
	}
	poll(false)
	if n := src.Rejected(); n != 1 || !errors.Is(src.LastError(), fs.ErrNotExist) {
		t.Fatalf("after two polls: Rejected = %d, LastError = %v", n, src.LastError())
	}
	poll(false)
	if n := src.Rejected(); n != 1 {
		t.Fatalf("Rejected = %d after a third poll, want still 1", n)
	}
}

// TestWatchConfirmsAnUnchangedFile: while the file stays readable and
// unchanged, its snapshot is sent again now and then with a later SyncedAt;
// while it is missing, nothing is confirmed.
func TestWatchConfirmsAnUnchangedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "instances.yaml")
	writeInPlace(t, path, fileOf("gpu-a"))
	h := watchPathWith(t, path, func(s *Source) { s.confirm = 4 * testPoll })
	first := h.next("gpu-a")
	if again := h.next("gpu-a"); !again.SyncedAt.After(first.SyncedAt) {
		t.Errorf("confirmation synced at %v, not after the first snapshot's %v", again.SyncedAt, first.SyncedAt)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	h.waitRejected(1)
	select { // a confirmation queued before the removal may still be pending
	case <-h.ch:
	case <-time.After(10 * testPoll):
	}
	h.none()
}
