package consul

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// This file holds the one blocking-query loop that both the Source and the
// LoadSource run, written from Consul's documentation of blocking queries
// (api-docs/features/blocking) and consistency modes
// (api-docs/features/consistency). viewpump turns its responses into a
// stream of whole views, as it does for etcd's watch.

// fetchFunc performs one query with q (WaitIndex, WaitTime, consistency and
// a context with the request's deadline already set) and returns its
// decoded result and metadata.
type fetchFunc[T any] func(q *api.QueryOptions) (T, *api.QueryMeta, error)

// queryStats are counters a role exposes for metrics and tests. They are
// shared by every Watch call of one Source or LoadSource.
type queryStats struct {
	queries atomic.Int64 // requests sent
	errors  atomic.Int64 // requests that failed (transport, deadline, non-200)
	stale   atomic.Int64 // responses dropped for a LastContact over MaxStale
	invalid atomic.Int64 // entries or records skipped as invalid, once each
}

// blockingQuery is one endpoint watched with Consul blocking queries.
type blockingQuery[T any] struct {
	what     string // for logs, e.g. "health/service/llm"
	fetch    fetchFunc[T]
	wait     time.Duration // Config.WaitTime
	slack    time.Duration // Config.RequestTimeout
	maxStale time.Duration
	interval time.Duration // token bucket refill (Config.QueryInterval)
	burst    int
	// pace, when set, returns the minimum spacing of queries implied by a
	// response (the LoadSource spaces its queries as the fleet grows).
	pace func(T) time.Duration
	// confirms: send unchanged answers too (the wait ran out with the same
	// index), which confirm the view. Off where receiving a record counts
	// as its owner being alive (the load records).
	confirms bool
	backoff  discovery.Backoff
	log      *slog.Logger
	stats    *queryStats
}

func newBlockingQuery[T any](c Config, what string, stats *queryStats, fetch fetchFunc[T]) *blockingQuery[T] {
	return &blockingQuery[T]{
		what: what, fetch: fetch,
		wait: c.WaitTime, slack: c.RequestTimeout, maxStale: c.MaxStale,
		interval: c.QueryInterval, burst: c.QueryBurst,
		backoff: c.backoff(), log: c.Logger, stats: stats,
	}
}

// nextIndex applies Consul's rules for the index of the next blocking query,
// given the index sent and the X-Consul-Index received:
//
//   - an index lower than the one sent went backwards (a snapshot restore,
//     a KV list whose newest key was deleted, a restarted dev agent): reset
//     to 0, a non-blocking read that re-establishes the baseline;
//   - an index of 0 must never be blocked on (Consul would answer at once,
//     forever): use 1, which is always safe to wait on.
func nextIndex(sent, got uint64) uint64 {
	switch {
	case got < sent:
		return 0
	case got == 0:
		return 1
	}
	return got
}

// deadline is how long one request may take: a query with index 0 does not
// block; one with an index may be held for wait plus Consul's jitter of up
// to wait/16, and gets slack on top for the transfer.
func (b *blockingQuery[T]) deadline(index uint64) time.Duration {
	if index == 0 {
		return b.slack
	}
	return b.wait + b.wait/16 + b.slack
}

// run queries until ctx ends and sends each response that may carry news
// on out (any to a query with index 0, and any whose index differs from the
// one sent; with confirms, every response), then closes out. It never returns an error: failures back off
// and are retried with a fresh read (index 0), and nothing is sent
// meanwhile, so consumers keep their last good view.
func (b *blockingQuery[T]) run(ctx context.Context, out chan<- T) {
	defer close(out)
	limit := rate.NewLimiter(rate.Every(b.interval), b.burst)
	var (
		index      uint64 // WaitIndex of the next query
		consistent bool   // the last stale answer was too old: ask the leader
		failures   int    // consecutive failures; picks the backoff
	)
	for {
		// Every query, failed or not, takes a token: nothing can spin.
		if err := limit.Wait(ctx); err != nil {
			return
		}
		q := &api.QueryOptions{WaitIndex: index, AllowStale: !consistent, RequireConsistent: consistent}
		if index > 0 {
			q.WaitTime = b.wait
		}
		rctx, cancel := context.WithTimeout(ctx, b.deadline(index))
		b.stats.queries.Add(1)
		data, meta, err := b.fetch(q.WithContext(rctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.stats.errors.Add(1)
			// Read afresh once Consul answers again: the answer may come
			// from a restarted agent whose index is not comparable with
			// ours, and may even equal it with different data.
			index = 0
			d := b.backoff.Delay(failures)
			failures++
			b.log.Warn("consul: query failed; keeping the last view and retrying",
				"query", b.what, "index", index, "error", err, "retry_in", d, "consecutive_failures", failures)
			if !discovery.Sleep(ctx, d) {
				return
			}
			continue
		}
		failures = 0
		if !consistent && meta.LastContact > b.maxStale {
			// The server that answered has not heard from the leader for
			// too long: its data may be arbitrarily old. Drop it, keep the
			// index, and ask again through the leader.
			b.stats.stale.Add(1)
			b.log.Warn("consul: stale answer dropped; asking the leader",
				"query", b.what, "last_contact", meta.LastContact, "max_stale", b.maxStale, "known_leader", meta.KnownLeader)
			consistent = true
			continue
		}
		consistent = false
		sent := index
		index = nextIndex(sent, meta.LastIndex)
		if b.pace != nil {
			limit.SetLimit(rate.Every(max(b.interval, b.pace(data))))
		}
		if sent != 0 && meta.LastIndex == sent && !b.confirms {
			continue // the wait ran out, or a write left this result alone
		}
		select {
		case out <- data:
		case <-ctx.Done():
			return
		}
	}
}
