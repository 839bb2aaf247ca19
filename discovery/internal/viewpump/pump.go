// Package viewpump turns a registry client's stream of answers into a
// stream of whole views for a discovery.Source or LoadSource. It owns the
// send discipline every registry shares (coalescing, closing the channel
// only after the fetch loop exited); the fetch loop itself, which knows the
// client library, stays in discovery/<registry>.
package viewpump

import (
	"context"
	"time"
)

// Reducer folds a fetch loop's answers of type T into a view of type V.
// Apply and Expire report whether the view may have changed, so that the
// view (O(n) to build) is only built when it did.
type Reducer[T, V any] interface {
	Apply(answer T) (changed bool)
	// Expire re-evaluates time-dependent state without an answer.
	Expire() (changed bool)
	// View returns the current output; ok is false when there is none to
	// send (the reducer logged why).
	View() (v V, ok bool)
}

// Run runs fetch, folds its answers with r and sends whole views on out:
// the first after the first answer, then one per change. tick, when not
// nil, calls r.Expire without an answer (the load view ages). confirm, when
// positive, also re-sends an unchanged view after an answer once the last
// view sent is confirm old, so that the consumer sees a quiet registry
// confirm its view (a snapshot's SyncedAt moves on) and can tell it from a
// lost one. fetch must return once ctx is done.
//
// Sends coalesce: while the consumer is busy, newer views replace the
// pending one, so a slow consumer never stalls the fetch loop. out is
// closed once ctx is done and fetch has returned.
func Run[T, V any](ctx context.Context, fetch func(ctx context.Context, out chan<- T), r Reducer[T, V], tick <-chan time.Time, confirm time.Duration, out chan<- V) {
	answers := make(chan T)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fetch(ctx, answers)
	}()
	defer func() {
		<-done
		close(out)
	}()
	var (
		pending       V
		synced, dirty bool
		queued        time.Time // when the last view was queued
	)
	update := func(changed, answered bool) {
		confirmDue := answered && confirm > 0 && time.Since(queued) >= confirm
		if synced && !changed && !confirmDue {
			return
		}
		if v, ok := r.View(); ok {
			synced, dirty, pending, queued = true, true, v, time.Now()
		}
	}
	for {
		var send chan<- V
		if dirty {
			send = out
		}
		select {
		case <-ctx.Done():
			return
		case a, ok := <-answers:
			if !ok {
				return
			}
			update(r.Apply(a), true)
		case <-tick:
			if synced {
				update(r.Expire(), false)
			}
		case send <- pending:
			dirty = false
			var zero V
			pending = zero
		}
	}
}
