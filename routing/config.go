package routing

import (
	"fmt"
	"math"
	"time"
)

// Config tunes the router's concurrency caps, queues and affinity bound.
// Zero values mean the documented defaults; Validate rejects bad values with
// the name of the flag that sets them, and nothing is silently corrected.
type Config struct {
	// AffinityLoadFactor is c of the bounded-load affinity rule: an instance
	// takes a keyed request only while its load stays within c times its
	// weighted share of the average. Values near 1 spread load evenly but
	// move keys often; larger values keep keys home longer. Default 1.25;
	// must be >= 1 (flag affinity-load-factor).
	AffinityLoadFactor float64
	// MaxInflightPerInstance caps the fleet's requests in flight to one
	// instance (this sidecar's plus its peers'), unless the instance's meta
	// "max_concurrency" says otherwise. Past the cap, requests wait in the
	// sidecar where priority can still reorder them, not in the engine.
	// Default 256 (vLLM's default max_num_seqs); -1 means no cap (flag
	// max-inflight-per-instance).
	MaxInflightPerInstance int
	// QueueMax bounds the requests waiting per model. Default 1024 (flag
	// queue-max).
	QueueMax int
	// QueueWaitHigh, QueueWaitNormal and QueueWaitLow bound how long a
	// request of each priority waits for an instance before it fails with
	// ErrQueueTimeout. Defaults 30s, 10s and 5s: the more a request matters,
	// the longer it may wait (flags queue-wait-high, -normal, -low).
	QueueWaitHigh, QueueWaitNormal, QueueWaitLow time.Duration
	// EngineStaleAfter is the age past which an instance's scraped engine
	// stats are ignored. Default 5s (flag engine-stale-after).
	EngineStaleAfter time.Duration
}

// Defaults of Config.
const (
	DefaultAffinityLoadFactor     = 1.25
	DefaultMaxInflightPerInstance = 256
	DefaultQueueMax               = 1024
	DefaultQueueWaitHigh          = 30 * time.Second
	DefaultQueueWaitNormal        = 10 * time.Second
	DefaultQueueWaitLow           = 5 * time.Second
	DefaultEngineStaleAfter       = 5 * time.Second
)

// metaMaxConcurrency is the instance meta key that overrides
// MaxInflightPerInstance for one instance.
const metaMaxConcurrency = "max_concurrency"

// Validate checks c; the error names the flag of the bad field.
func (c Config) Validate() error {
	switch {
	case c.AffinityLoadFactor != 0 && (c.AffinityLoadFactor < 1 || math.IsNaN(c.AffinityLoadFactor) || math.IsInf(c.AffinityLoadFactor, 0)):
		return badField("affinity-load-factor", c.AffinityLoadFactor, "must be a finite number >= 1 (0 means 1.25)")
	case c.MaxInflightPerInstance < -1:
		return badField("max-inflight-per-instance", c.MaxInflightPerInstance, "must be -1 (no cap) or >= 0 (0 means 256)")
	case c.QueueMax < 0:
		return badField("queue-max", c.QueueMax, "must be >= 0 (0 means 1024)")
	case c.QueueWaitHigh < 0:
		return badField("queue-wait-high", c.QueueWaitHigh, "must be >= 0 (0 means 30s)")
	case c.QueueWaitNormal < 0:
		return badField("queue-wait-normal", c.QueueWaitNormal, "must be >= 0 (0 means 10s)")
	case c.QueueWaitLow < 0:
		return badField("queue-wait-low", c.QueueWaitLow, "must be >= 0 (0 means 5s)")
	case c.EngineStaleAfter < 0:
		return badField("engine-stale-after", c.EngineStaleAfter, "must be >= 0 (0 means 5s)")
	}
	return nil
}

func badField(flag string, v any, why string) error {
	return fmt.Errorf("routing: %s: %v: %s", flag, v, why)
}

// withDefaults returns c with zero values replaced by the defaults.
func (c Config) withDefaults() Config {
	setDefault(&c.AffinityLoadFactor, DefaultAffinityLoadFactor)
	setDefault(&c.MaxInflightPerInstance, DefaultMaxInflightPerInstance)
	setDefault(&c.QueueMax, DefaultQueueMax)
	setDefault(&c.QueueWaitHigh, DefaultQueueWaitHigh)
	setDefault(&c.QueueWaitNormal, DefaultQueueWaitNormal)
	setDefault(&c.QueueWaitLow, DefaultQueueWaitLow)
	setDefault(&c.EngineStaleAfter, DefaultEngineStaleAfter)
	return c
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// maxWait is how long a request of priority p may wait in a queue.
func (c Config) maxWait(p Priority) time.Duration {
	switch p {
	case PriorityHigh:
		return c.QueueWaitHigh
	case PriorityLow:
		return c.QueueWaitLow
	}
	return c.QueueWaitNormal
}
