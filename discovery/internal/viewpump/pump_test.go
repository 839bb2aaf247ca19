package viewpump

import (
	"context"
	"testing"
	"time"
)

// sum is a Reducer whose view is the running total; an answer of 0 changes
// nothing.
type sum struct{ total int }

func (s *sum) Apply(n int) bool  { s.total += n; return n != 0 }
func (s *sum) Expire() bool      { return false }
func (s *sum) View() (int, bool) { return s.total, true }

func TestRunSendsChangesCoalescedAndCloses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	answers := []int{1, 0, 2, 3}
	fed := make(chan struct{})
	fetch := func(ctx context.Context, out chan<- int) {
		for _, a := range answers {
			select {
			case out <- a:
			case <-ctx.Done():
				return
			}
		}
		close(fed)
		<-ctx.Done()
	}
	out := make(chan int)
	go Run[int, int](ctx, fetch, &sum{}, nil, out)
	<-fed
	// Every answer was folded before the first receive (Run applies an
	// answer before it selects again): the consumer sees the latest view
	// once, not one per answer.
	select {
	case got := <-out:
		if got != 6 {
			t.Fatalf("first view %d, want 6", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no view")
	}
	cancel()
	for range out { // Run closes out once fetch returned
	}
}
