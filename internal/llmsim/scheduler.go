package llmsim

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
)

// scheduler admits at most slots requests to run at once and queues the
// rest in arrival order, like vLLM's scheduler with --max-num-seqs. A freed
// slot is handed straight to the head of the queue, so a late arrival can
// never overtake a waiting request.
type scheduler struct {
	slots    int
	maxQueue int // 0 = unbounded

	mu      sync.Mutex
	running int
	queue   list.List // of *ticket, oldest first

	// Mirrors of running and queue.Len() for lock-free reads by metrics and
	// Stats; written only under mu.
	nRunning atomic.Int64
	nWaiting atomic.Int64
}

type ticketState int

const (
	ticketWaiting ticketState = iota
	ticketRunning
	ticketDone
)

// ticket is one request's place in the scheduler. Its owner must call
// release exactly once, whatever happened.
type ticket struct {
	s     *scheduler
	state ticketState   // guarded by s.mu
	elem  *list.Element // in s.queue while waiting
	ready chan struct{} // closed when the ticket gets a slot
}

func newScheduler(slots, maxQueue int) *scheduler {
	return &scheduler{slots: slots, maxQueue: maxQueue}
}

// enqueue gives the request a slot at once if one is free and nobody waits,
// or else a place at the tail of the queue. It fails with errQueueFull when
// maxQueue requests already wait.
func (s *scheduler) enqueue() (*ticket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &ticket{s: s, ready: make(chan struct{})}
	switch {
	case s.running < s.slots && s.queue.Len() == 0:
		s.running++
		t.state = ticketRunning
		close(t.ready)
	case s.maxQueue > 0 && s.queue.Len() >= s.maxQueue:
		return nil, errQueueFull
	default:
		t.elem = s.queue.PushBack(t)
	}
	s.publish()
	return t, nil
}

// wait blocks until t holds a slot or ctx is done. After a ctx error the
// ticket may or may not hold a slot; release handles both.
func (t *ticket) wait(ctx context.Context) error {
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// release leaves the queue, or frees the slot by handing it to the oldest
// waiter. Calling it again is a no-op.
func (t *ticket) release() {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	switch t.state {
	case ticketWaiting:
		s.queue.Remove(t.elem)
		t.elem = nil
	case ticketRunning:
		if front := s.queue.Front(); front != nil {
			next := s.queue.Remove(front).(*ticket)
			next.elem = nil
			next.state = ticketRunning
			close(next.ready)
		} else {
			s.running--
		}
	case ticketDone:
		return
	}
	t.state = ticketDone
	s.publish()
}

// publish refreshes the lock-free mirrors; s.mu must be held.
func (s *scheduler) publish() {
	s.nRunning.Store(int64(s.running))
	s.nWaiting.Store(int64(s.queue.Len()))
}
