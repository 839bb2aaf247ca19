package static

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/discovery"
)

// DefaultPollInterval is how often a Source stats its file when
// PollInterval is zero.
const DefaultPollInterval = time.Second

// Source is a discovery.Source backed by one static file. Set the fields
// before calling Watch and do not change them afterwards. A Source must not
// be copied after first use.
type Source struct {
	// Path of the YAML or JSON file. Required.
	Path string
	// PollInterval is how often the file is stat'ed; it is read only when
	// its size, mtime or inode changed (or its mtime is too recent to trust).
	// Zero means DefaultPollInterval (1s); negative is invalid.
	PollInterval time.Duration
	// Logger receives one record per reload and per distinct rejected
	// version. Nil means slog.Default().
	Logger *slog.Logger

	rejected atomic.Int64
	polls    atomic.Int64  // completed polls, so tests can wait for one
	confirm  time.Duration // 0: discovery.ConfirmEvery; shorter in tests

	mu      sync.Mutex
	lastErr error
}

var _ discovery.Source = (*Source)(nil)

// New returns a Source for path with default settings.
func New(path string) *Source { return &Source{Path: path} }

// Validate reports a bad setting by field name. Watch calls it too, but
// calling it first lets a command line exit with a usage error.
func (s *Source) Validate() error {
	if s.Path == "" {
		return errors.New("static: Path: required")
	}
	if s.PollInterval < 0 {
		return fmt.Errorf("static: PollInterval %v: must be positive (0 means %v)", s.PollInterval, DefaultPollInterval)
	}
	return nil
}

// Rejected returns how many distinct file versions or read failures could
// not become a snapshot since the Source was created: a new invalid content,
// a missing file. A failure counts once it is seen on two polls in a row
// (one poll interval after it appears) and counts once however long it lasts.
func (s *Source) Rejected() int64 { return s.rejected.Load() }

// LastError returns why the current file cannot be used (a failure counted
// by Rejected), or nil when the file matches the snapshot being served.
func (s *Source) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

func (s *Source) setLastError(err error) {
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
}

// Watch polls the file until ctx is done and sends a snapshot after the
// first valid read, then one per change of the valid content, and the
// unchanged snapshot again about every discovery.ConfirmEvery while the file
// stays readable and unchanged (with SyncedAt the time of that poll). Before the
// first valid read nothing is sent, so readiness stays false. A missing or
// invalid file keeps the last good snapshot. A slow receiver gets the newest
// snapshot, not a backlog. The channel is closed when ctx is done.
//
// If the Source's settings are invalid, Watch logs the error, records it in
// LastError and sends nothing. Each call polls independently; Rejected and
// LastError are shared by all of them.
func (s *Source) Watch(ctx context.Context) <-chan discovery.Snapshot {
	out := make(chan discovery.Snapshot)
	go s.run(ctx, out)
	return out
}

func (s *Source) run(ctx context.Context, out chan<- discovery.Snapshot) {
	defer close(out)
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := s.Validate(); err != nil {
		log.Error("static: not watching", "err", err)
		s.setLastError(err)
		<-ctx.Done()
		return
	}
	interval := s.PollInterval
	if interval == 0 {
		interval = DefaultPollInterval
	}
	w := &watcher{src: s, log: log}
	confirmEvery := s.confirm
	if confirmEvery == 0 {
		confirmEvery = discovery.ConfirmEvery
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	// pending holds a snapshot not yet received; a newer one replaces it,
	// and polling goes on while the receiver is busy.
	var pending *discovery.Snapshot
	var last discovery.Snapshot // the newest snapshot produced
	var queued time.Time        // when it, or its confirmation, was queued
	queue := func(snap discovery.Snapshot) {
		last, queued = snap, time.Now()
		pending = &last
	}
	if snap, ok := w.poll(); ok {
		queue(snap)
	}
	for {
		var send chan<- discovery.Snapshot // nil: the send case is off
		var next discovery.Snapshot
		if pending != nil {
			send, next = out, *pending
		}
		select {
		case <-ctx.Done():
			return
		case send <- next:
			pending = nil
		case <-ticker.C:
			if snap, ok := w.poll(); ok {
				queue(snap)
			} else if w.healthy() && time.Since(queued) >= confirmEvery {
				// The file is still there and unchanged: the view is
				// confirmed as of now.
				snap := last
				snap.SyncedAt = time.Now()
				queue(snap)
			}
		}
	}
}
