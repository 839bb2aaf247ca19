package routing

import (
	"context"
	"errors"
	"time"
)

// maxAcquireRaces bounds how often Acquire re-picks after losing an
// instance's last slot to a concurrent request between pick and count.
const maxAcquireRaces = 4

// Acquire picks an instance for req and counts the request in flight to it,
// so that the cap check and the count cannot race. When every instance that
// could take the request is at its cap, the request waits in its model's
// queue: ordered by priority, FIFO within one, for at most its priority's
// maximum wait. A request that arrives while others wait queues too, so it
// overtakes only waiters of a lower priority. Acquire returns ErrQueueFull
// when the queue has no room (or a higher-priority request shed this one),
// ErrQueueTimeout when the wait expired, ctx's error when ctx ended first,
// and Pick's errors otherwise. Every successful Acquire must be paired with
// one Release.
//
// Unless it waits, it takes no lock but the chosen instance's counter lock
// and allocates nothing; waiting allocates one waiter and a timer.
func (r *Router) Acquire(ctx context.Context, req *Request) (*Endpoint, Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	mr, err := r.route(req)
	if err != nil {
		return nil, "", err
	}
	if mr.queue.len.Load() == 0 {
		ep, route, err := r.tryAcquire(mr, req)
		if !errors.Is(err, ErrSaturated) {
			return ep, route, err
		}
	}
	return r.wait(ctx, req, mr.queue)
}

// Release ends a request counted by Acquire. It wakes the first waiter of
// each of the instance's models, which retries its pick.
func (r *Router) Release(ep *Endpoint) { ep.Load.Release() }

// tryAcquire picks from mr and counts, re-picking when it loses an
// instance's last slot to a concurrent request (that instance is then at
// its cap, so the next pick skips it).
func (r *Router) tryAcquire(mr *ModelRoute, req *Request) (*Endpoint, Route, error) {
	for range maxAcquireRaces {
		ep, route, err := r.pickIn(mr, req)
		if err != nil {
			return nil, "", err
		}
		if ep.Load.tryAcquire(capWith(ep.MaxInflight, ep.Load.Slots())) {
			return ep, route, nil
		}
	}
	return nil, "", ErrSaturated
}

// wait queues req in q until it is at the head and gets an instance, or
// fails: shed, timed out, ctx done, or a pick error other than saturation.
func (r *Router) wait(ctx context.Context, req *Request, q *modelQueue) (*Endpoint, Route, error) {
	w := newWaiter(req.Priority)
	if err := q.enqueue(w, r.cfg.Load().QueueMax); err != nil {
		return nil, "", err
	}
	timer := time.NewTimer(r.cfg.Load().maxWait(req.Priority))
	defer timer.Stop()
	for {
		head, err := q.turn(w)
		if err != nil {
			return nil, "", err
		}
		if head {
			// The current table, not the one the request arrived under:
			// instances or the whole model may have gone meanwhile.
			ep, route, err := r.acquireNow(req)
			if !errors.Is(err, ErrSaturated) {
				// Shed while picking does not matter: it has its instance.
				q.leave(w)
				return ep, route, err
			}
		}
		select {
		case <-w.wake:
		case <-timer.C:
			if err := q.leave(w); err != nil {
				return nil, "", err
			}
			return nil, "", ErrQueueTimeout
		case <-ctx.Done():
			q.leave(w)
			return nil, "", ctx.Err()
		}
	}
}

func (r *Router) acquireNow(req *Request) (*Endpoint, Route, error) {
	mr, err := r.route(req)
	if err != nil {
		return nil, "", err
	}
	return r.tryAcquire(mr, req)
}

// QueueDepth is the number of requests of priority p waiting in every
// model's queue (blitz_queue_depth{priority}).
func (r *Router) QueueDepth(p Priority) int {
	return int(r.st.queued[p%numPriorities].Load())
}
