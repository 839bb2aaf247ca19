package routing

import (
	"sync"
	"sync/atomic"
)

// Queued counts requests waiting for an instance, per priority. Its fields
// match discovery.QueuedByPriority, so one converts to the other.
type Queued struct {
	High   int64
	Normal int64
	Low    int64
}

// queueOrder is the order in which waiters get an instance: high before
// normal before low. Shedding walks it backwards.
var queueOrder = [numPriorities]Priority{PriorityHigh, PriorityNormal, PriorityLow}

// modelQueue holds the requests waiting for one model's instances, one FIFO
// list per priority. Only its head may pick: a request that arrives while
// others wait joins the queue behind those of its priority, so nobody
// overtakes a waiter of the same or a higher priority. Queues are per model
// and keyed by model name in the router, so one model's backlog never
// delays another's requests and a table swap keeps the waiters.
type modelQueue struct {
	mu    sync.Mutex
	lists [numPriorities]waitList // indexed by Priority
	// len and depth mirror the lists for lock-free reads: wake skips an
	// empty queue with one load, metrics read depth.
	len   atomic.Int64
	depth [numPriorities]atomic.Int64
	// total is the router-wide depth per priority (Router.QueueDepth).
	total *[numPriorities]atomic.Int64
}

// waiter is one request in a queue.
type waiter struct {
	prev, next *waiter
	prio       Priority
	// wake holds at most one pending signal, so a wake sent while the
	// waiter is busy retrying is not lost.
	wake chan struct{}
	// Guarded by the queue's mu: whether the waiter is still queued, and the
	// error it was evicted with.
	queued bool
	err    error
}

func newWaiter(p Priority) *waiter {
	return &waiter{prio: p % numPriorities, wake: make(chan struct{}, 1)}
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// waitList is an intrusive FIFO list of waiters.
type waitList struct{ head, tail *waiter }

func (l *waitList) push(w *waiter) {
	w.prev, w.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (l *waitList) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
}

// enqueue adds w behind the waiters of its priority. When the queue holds
// limit waiters, the newest waiter of the lowest priority below w's is shed
// to make room (it wakes with errShed); when there is none, w is refused
// with ErrQueueFull.
func (q *modelQueue) enqueue(w *waiter, limit int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.len.Load() >= int64(limit) {
		victim := q.sheddable(w.prio)
		if victim == nil {
			return ErrQueueFull
		}
		q.removeLocked(victim)
		victim.err = errShed
		victim.signal()
	}
	q.lists[w.prio].push(w)
	w.queued = true
	q.count(w.prio, 1)
	return nil
}

// sheddable returns the newest waiter of the lowest priority that ranks
// below p, or nil. The newest goes first: older waiters have paid more.
func (q *modelQueue) sheddable(p Priority) *waiter {
	for i := len(queueOrder) - 1; i >= 0 && queueOrder[i] != p; i-- {
		if v := q.lists[queueOrder[i]].tail; v != nil {
			return v
		}
	}
	return nil
}

// turn reports whether w is at the head of the queue and may pick, or the
// error it was shed with.
func (q *modelQueue) turn(w *waiter) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false, w.err
	}
	return q.headLocked() == w, nil
}

// leave takes w out of the queue (it got an instance, gave up or failed)
// and, if it was the head, wakes the next one: w may have consumed the
// wake that was meant for whoever picks next. It returns the error w was
// shed with, if it was.
func (q *modelQueue) leave(w *waiter) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return w.err
	}
	wasHead := q.headLocked() == w
	q.removeLocked(w)
	if h := q.headLocked(); wasHead && h != nil {
		h.signal()
	}
	return nil
}

// wakeHead tells the head waiter to retry its pick.
func (q *modelQueue) wakeHead() {
	q.mu.Lock()
	if h := q.headLocked(); h != nil {
		h.signal()
	}
	q.mu.Unlock()
}

func (q *modelQueue) headLocked() *waiter {
	for _, p := range queueOrder {
		if h := q.lists[p].head; h != nil {
			return h
		}
	}
	return nil
}

func (q *modelQueue) removeLocked(w *waiter) {
	q.lists[w.prio].remove(w)
	w.queued = false
	q.count(w.prio, -1)
}

func (q *modelQueue) count(p Priority, d int64) {
	q.len.Add(d)
	q.depth[p].Add(d)
	if q.total != nil {
		q.total[p].Add(d)
	}
}

// depths reads the per-priority depth without locking.
func (q *modelQueue) depths() Queued {
	return Queued{
		High:   q.depth[PriorityHigh].Load(),
		Normal: q.depth[PriorityNormal].Load(),
		Low:    q.depth[PriorityLow].Load(),
	}
}
