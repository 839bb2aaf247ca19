package viewpump

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
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
	go Run[int, int](ctx, fetch, &sum{}, nil, 0, out)
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

// TestRunConfirmsUnchangedViews: with confirm set, an answer that changes
// nothing re-sends the view once the last one is confirm old, and not
// before; without it, unchanged answers send nothing.
func TestRunConfirmsUnchangedViews(t *testing.T) {
	for _, tc := range []struct {
		name    string
		confirm time.Duration
		want    []int // views received, in order
	}{
		{"confirm", time.Minute, []int{1, 1}},
		{"no confirm", 0, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				answers := make(chan int)
				fetch := func(ctx context.Context, out chan<- int) {
					for {
						select {
						case a := <-answers:
							out <- a
						case <-ctx.Done():
							return
						}
					}
				}
				out := make(chan int)
				ctx, cancel := context.WithCancel(t.Context())
				go Run[int, int](ctx, fetch, &sum{}, nil, tc.confirm, out)
				var got []int
				go func() {
					for v := range out {
						got = append(got, v)
					}
				}()
				answers <- 1 // the first view
				synctest.Wait()
				answers <- 0 // unchanged, too soon to confirm
				synctest.Wait()
				time.Sleep(time.Minute)
				answers <- 0 // unchanged, a minute on: confirms
				synctest.Wait()
				cancel()
				synctest.Wait()
				if !slices.Equal(got, tc.want) {
					t.Errorf("views %v, want %v", got, tc.want)
				}
			})
		})
	}
}
