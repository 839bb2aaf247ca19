package routing

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Priority orders requests under saturation: low is shed first.
type Priority uint8

// Priorities, from the X-Blitz-Priority header.
const (
	PriorityNormal Priority = iota
	PriorityHigh
	PriorityLow
	numPriorities
)

var priorityNames = [numPriorities]string{"normal", "high", "low"}

// String returns the header and label form: high, normal or low.
func (p Priority) String() string {
	if p < numPriorities {
		return priorityNames[p]
	}
	return "unknown"
}

// ParsePriority reads an X-Blitz-Priority value; empty means normal.
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "", "normal":
		return PriorityNormal, nil
	case "high":
		return PriorityHigh, nil
	case "low":
		return PriorityLow, nil
	}
	return PriorityNormal, fmt.Errorf("routing: priority %q: want high, normal or low", s)
}

// RateLimit is one priority's token bucket.
type RateLimit struct {
	// Rate is admitted requests per second; 0 means unlimited.
	Rate float64 `yaml:"rate"`
	// Burst is how many requests may arrive at once; 0 means max(1, Rate).
	Burst int `yaml:"burst"`
}

// Validate rejects negative values, naming the flag (rate-<priority>).
func (l RateLimit) Validate(prefix string) error {
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		return fmt.Errorf("rate-%s: %v: must be a finite number >= 0", prefix, l.Rate)
	}
	if l.Burst < 0 {
		return fmt.Errorf("burst-%s: %d: must be >= 0", prefix, l.Burst)
	}
	return nil
}

// AdmissionConfig holds one token bucket per priority. The zero value admits
// everything.
type AdmissionConfig struct {
	High, Normal, Low RateLimit
}

// Validate checks every bucket; the error names the flag, e.g. "rate-low".
func (c AdmissionConfig) Validate() error {
	for _, x := range []struct {
		name string
		l    RateLimit
	}{{"high", c.High}, {"normal", c.Normal}, {"low", c.Low}} {
		if err := x.l.Validate(x.name); err != nil {
			return fmt.Errorf("routing: %w", err)
		}
	}
	return nil
}

// Admission applies a token bucket per priority (golang.org/x/time/rate).
type Admission struct {
	limiters [numPriorities]*rate.Limiter
}

// NewAdmission builds the buckets of cfg.
func NewAdmission(cfg AdmissionConfig) *Admission {
	a := &Admission{}
	for p, l := range map[Priority]RateLimit{PriorityHigh: cfg.High, PriorityNormal: cfg.Normal, PriorityLow: cfg.Low} {
		if l.Rate == 0 {
			a.limiters[p] = rate.NewLimiter(rate.Inf, 0)
			continue
		}
		burst := l.Burst
		if burst == 0 {
			burst = max(1, int(math.Ceil(l.Rate)))
		}
		a.limiters[p] = rate.NewLimiter(rate.Limit(l.Rate), burst)
	}
	return a
}

// Admit takes a token for p at now. When none is left it returns false and
// how long until one will be, for Retry-After.
func (a *Admission) Admit(p Priority, now time.Time) (bool, time.Duration) {
	lim := a.limiters[p%numPriorities]
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
