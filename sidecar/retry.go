package sidecar

import (
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// RetryBudget bounds retries to a fraction of recent requests plus a small
// floor, so that retries cannot multiply an overload (Finagle's and
// Envoy's retry budgets work the same way).
type RetryBudget struct {
	// Ratio is the retries allowed per request, on average. Default 0.2.
	Ratio float64
	// MinPerSecond lets this many retries a second through whatever the
	// ratio says, so a quiet sidecar can still fail over. Default 10.
	MinPerSecond float64
}

func (b RetryBudget) withDefaults() RetryBudget {
	setDefault(&b.Ratio, 0.2)
	setDefault(&b.MinPerSecond, 10)
	return b
}

// Validate names the flag of a bad field.
func (b RetryBudget) Validate() error {
	switch {
	case b.Ratio < 0 || b.Ratio > 1 || math.IsNaN(b.Ratio):
		return badField("retry-budget-ratio", b.Ratio, "must be in [0, 1]")
	case b.MinPerSecond < 0 || math.IsNaN(b.MinPerSecond) || math.IsInf(b.MinPerSecond, 0):
		return badField("retry-budget-min", b.MinPerSecond, "must be a finite number >= 0")
	}
	return nil
}

// retryTokenScale turns fractional tokens into integers for atomics.
const retryTokenScale = 1000

// retryBudget is RetryBudget at run time: every request deposits Ratio
// tokens (capped, so a long quiet spell does not bank a retry storm) and
// every retry withdraws one; the floor is a token bucket of its own.
type retryBudget struct {
	deposit int64 // milli-tokens per request
	cap     int64
	balance atomic.Int64
	floor   *rate.Limiter
}

func newRetryBudget(b RetryBudget) *retryBudget {
	b = b.withDefaults()
	burst := max(1, int(math.Ceil(b.MinPerSecond)))
	return &retryBudget{
		deposit: int64(b.Ratio * retryTokenScale),
		// At most ten seconds' worth of the floor, or 100 retries, banked.
		cap:   int64(max(100, 10*b.MinPerSecond)) * retryTokenScale,
		floor: rate.NewLimiter(rate.Limit(b.MinPerSecond), burst),
	}
}

// onRequest deposits one request's share.
func (r *retryBudget) onRequest() {
	if r.balance.Add(r.deposit) > r.cap {
		r.balance.Store(r.cap)
	}
}

// withdraw reports whether one retry may be made now.
func (r *retryBudget) withdraw(now time.Time) bool {
	for {
		b := r.balance.Load()
		if b < retryTokenScale {
			return r.floor.AllowN(now, 1)
		}
		if r.balance.CompareAndSwap(b, b-retryTokenScale) {
			return true
		}
	}
}

func (r *retryBudget) String() string {
	return fmt.Sprintf("retry budget: %.1f tokens", float64(r.balance.Load())/retryTokenScale)
}
