package discovery

import (
	"context"
	"testing"
	"time"
)

// Moved from the etcd package, which with Consul now uses Backoff.
func TestBackoffIsCappedAndJittered(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := range 20 {
		d := b.Delay(attempt)
		want := min(100*time.Millisecond<<min(attempt, 10), 5*time.Second)
		if d < want/2 || d >= want {
			t.Fatalf("Delay(%d) = %v, want in [%v, %v)", attempt, d, want/2, want)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	noJitter := func(time.Duration) time.Duration { return 0 }
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{name: "first", b: Backoff{Initial: time.Second, Max: 8 * time.Second}, want: 500 * time.Millisecond},
		{name: "doubles", b: Backoff{Initial: time.Second, Max: 8 * time.Second}, attempt: 2, want: 2 * time.Second},
		{name: "capped", b: Backoff{Initial: time.Second, Max: 8 * time.Second}, attempt: 60, want: 4 * time.Second},
		{name: "zero stays zero", b: Backoff{}, attempt: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.b.Jitter = noJitter
			if got := tt.b.Delay(tt.attempt); got != tt.want {
				t.Fatalf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffWaitStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if (Backoff{Initial: time.Hour, Max: time.Hour}).Wait(ctx, 0) {
		t.Fatal("Wait on a cancelled context reported a full wait")
	}
	if !(Backoff{}).Wait(context.Background(), 0) {
		t.Fatal("Wait of zero did not complete")
	}
}
