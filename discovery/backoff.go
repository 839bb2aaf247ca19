package discovery

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff computes the capped, jittered exponential waits a registry
// client uses between retries, so that a failing registry is never hit in
// a hot loop and a fleet does not retry in step.
type Backoff struct {
	// Initial is the wait before the first retry; each further attempt
	// doubles it up to Max.
	Initial, Max time.Duration
	// Jitter returns a uniform duration in [0, n). Default rand.N; tests
	// inject a fixed one.
	Jitter func(n time.Duration) time.Duration
}

// Delay returns the wait before retry number attempt (0-based): Initial ×
// 2^attempt capped at Max, then jittered into [d/2, d).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if d <= 1 {
		return d
	}
	jitter := b.Jitter
	if jitter == nil {
		jitter = rand.N[time.Duration]
	}
	half := d / 2
	return half + jitter(d-half)
}

// Wait blocks for Delay(attempt) or until ctx ends, and reports whether the
// full wait elapsed.
func (b Backoff) Wait(ctx context.Context, attempt int) bool {
	return Sleep(ctx, b.Delay(attempt))
}

// Sleep blocks for d or until ctx ends, whichever is first, and reports
// whether the full wait elapsed. Callers that log the delay before waiting
// use it with Backoff.Delay.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
