package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/discovery"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the one list-then-watch loop that both the instance
// Source and the LoadSource use. viewpump turns its batches into a stream
// of whole views, as it does for Consul's blocking query.

// kvEvent is one change of one key. name is the key with the watched prefix
// cut off: the instance id or the sidecar id.
type kvEvent struct {
	name    string
	value   []byte
	modRev  int64
	deleted bool
}

// batch is what the watcher delivers, in revision order: either the whole
// prefix after a (re-)read (full, every key as a put) or the events of one
// watch response.
type batch struct {
	full   bool
	events []kvEvent
}

// watchStats are counters a role exposes for metrics. They are shared by
// every Watch call of one Source or LoadSource.
type watchStats struct {
	invalid atomic.Int64 // values skipped, once per key and revision
	resyncs atomic.Int64 // full re-reads after the first
	events  atomic.Int64 // watch events received
}

// errWatchClosed reports a watch channel that closed without an error;
// errWatchStalled a watch that stopped answering progress requests.
var (
	errWatchClosed  = errors.New("etcd: watch channel closed")
	errWatchStalled = errors.New("etcd: watch stalled")
)

// prefixWatcher lists a prefix, then watches it from the next revision.
// On any failure it re-reads the whole prefix and watches again: it never
// resumes from a guessed revision, so it can neither skip an update nor
// apply one twice.
type prefixWatcher struct {
	client   *clientv3.Client
	prefix   string
	backoff  discovery.Backoff
	timeout  time.Duration
	progress time.Duration // Config.WatchProgressInterval
	log      *slog.Logger
	stats    *watchStats
}

// run delivers batches on out until ctx ends, then closes out.
func (w *prefixWatcher) run(ctx context.Context, out chan<- batch) {
	defer close(out)
	failures := 0 // consecutive failures; picks the backoff
	for listed := false; ; {
		rev, err := w.list(ctx, out)
		if err == nil {
			if listed {
				w.stats.resyncs.Add(1)
			}
			listed = true
			// From the read's own revision, not the next: etcd answers
			// progress requests only for watches whose start revision it
			// has reached, so a watch from rev+1 on a quiet cluster (no
			// write since the read) would look stalled. The events of rev
			// itself, already in the read, replay harmlessly: both views
			// ignore an entry at a revision they hold.
			err = w.watch(ctx, rev, out, &failures)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, rpctypes.ErrCompacted) && failures == 0 {
			// Not a failure: the server is fine, we fell behind its history
			// (typically after a disconnection). The re-read returns the
			// current state, so re-read at once; a second compaction before
			// any healthy response backs off like an error, so that nothing
			// can make this loop spin.
			w.log.Info("etcd: watch compacted; re-reading", "prefix", w.prefix, "error", err)
			failures = 1
			continue
		}
		d := w.backoff.Delay(failures)
		failures++
		w.log.Warn("etcd: registry error; keeping the last view and retrying",
			"prefix", w.prefix, "error", err, "retry_in", d, "consecutive_failures", failures)
		if !discovery.Sleep(ctx, d) {
			return
		}
	}
}

// list reads the whole prefix, sends it as one full batch and returns the
// store revision it reflects.
func (w *prefixWatcher) list(ctx context.Context, out chan<- batch) (int64, error) {
	gctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	resp, err := w.client.Get(gctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: get %s: %w", w.prefix, err)
	}
	b := batch{full: true, events: make([]kvEvent, 0, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		b.events = append(b.events, kvEvent{name: string(kv.Key[len(w.prefix):]), value: kv.Value, modRev: kv.ModRevision})
	}
	select {
	case out <- b:
		return resp.Header.Revision, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// watch streams events from revision from until the watch fails or ctx
// ends. A healthy response resets *failures.
func (w *prefixWatcher) watch(ctx context.Context, from int64, out chan<- batch, failures *int) error {
	// require-leader: a member cut off from its cluster cancels the watch
	// instead of silently serving nothing. Progress notifications keep an
	// idle watch's revision current, so a reconnect resumes close to now.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Watch blocks until the server has set the stream up, forever on a
	// half-open connection: bound it like any request.
	created := time.AfterFunc(w.timeout, cancel)
	wch := w.client.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	if !created.Stop() {
		return fmt.Errorf("etcd: watch %s: not set up within %v: %w", w.prefix, w.timeout, errWatchStalled)
	}
	check := time.NewTicker(w.progress)
	defer check.Stop()
	heard, asked := time.Now(), time.Time{}
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-check.C:
			if asked.After(heard) {
				if now.Sub(asked) >= w.progress {
					return fmt.Errorf("etcd: watch %s: no answer to a progress request for %v: %w", w.prefix, now.Sub(asked).Round(time.Millisecond), errWatchStalled)
				}
			} else if now.Sub(heard) >= w.progress/2 {
				// The request goes on the stream wctx names; its answer
				// reaches every watcher on that stream.
				rctx, cancel := context.WithTimeout(wctx, w.timeout)
				_ = w.client.RequestProgress(rctx) // a failure shows as silence
				cancel()
				asked = time.Now()
			}
			continue
		case wr, ok = <-wch:
			heard = time.Now()
		}
		if !ok {
			return errWatchClosed
		}
		if err := wr.Err(); err != nil {
			// Includes compaction: CompactRevision != 0 maps to ErrCompacted.
			return fmt.Errorf("etcd: watch %s from revision %d: %w", w.prefix, from, err)
		}
		if wr.Canceled {
			return fmt.Errorf("etcd: watch %s canceled by the server: %w", w.prefix, errWatchClosed)
		}
		*failures = 0
		// A progress notification (no events) is passed on as an empty
		// batch: the cluster has confirmed the view up to now.
		w.stats.events.Add(int64(len(wr.Events)))
		b := batch{events: make([]kvEvent, 0, len(wr.Events))}
		for _, ev := range wr.Events {
			b.events = append(b.events, kvEvent{
				name:    string(ev.Kv.Key[len(w.prefix):]),
				value:   ev.Kv.Value,
				modRev:  ev.Kv.ModRevision,
				deleted: ev.Type == clientv3.EventTypeDelete,
			})
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
