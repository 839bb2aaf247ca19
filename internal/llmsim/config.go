package llmsim

import (
	"errors"
	"strings"
	"time"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultID                = "sim"
	DefaultTTFT              = 50 * time.Millisecond
	DefaultITL               = 10 * time.Millisecond
	DefaultMaxConcurrency    = 64
	DefaultPrefixCacheBlocks = 4096
	DefaultBlockSize         = 64
	DefaultMaxTokens         = 16
)

// Config describes one simulated engine. The zero value of every field but
// Models means its default; Validate rejects negative values rather than
// correcting them.
type Config struct {
	// ID is echoed in the X-Sim-Id response header so tests and the demo can
	// tell which instance answered. Default "sim".
	ID string
	// Models lists the model ids served; at least one is required. The first
	// one labels the metrics (model_name), as vLLM labels its metrics with its
	// served model name.
	Models []string
	// TTFT is the time to first token of a prompt with no prefix-cache hit.
	// Default 50ms.
	TTFT time.Duration
	// ITL is the inter-token latency. Default 10ms.
	ITL time.Duration
	// MaxConcurrency is the number of running slots, like vLLM's
	// --max-num-seqs; further requests wait in a FIFO queue. Default 64.
	MaxConcurrency int
	// MaxQueue is the number of waiting requests beyond which new ones get 503
	// (code "queue_full"). 0 means unbounded, like vLLM.
	MaxQueue int
	// PrefixCacheBlocks is the LRU capacity of the prefix cache in prompt
	// blocks. Default 4096; use DisablePrefixCache to turn the cache off.
	PrefixCacheBlocks int
	// DisablePrefixCache turns the prefix cache off: every prompt pays the
	// full TTFT and the prefix-cache counters stay at zero.
	DisablePrefixCache bool
	// BlockSize is the number of prompt bytes per cache block: about 16
	// tokens of 4 bytes, vLLM's default block size. Default 64.
	BlockSize int
	// DefaultMaxTokens is the number of output tokens of a request that sets
	// neither max_tokens nor max_completion_tokens. Default 16.
	DefaultMaxTokens int
	// Seed seeds the random source that decides injected errors and picks
	// output words, so that runs are reproducible. Default 0 (a valid seed).
	Seed int64
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = DefaultID
	}
	if c.TTFT == 0 {
		c.TTFT = DefaultTTFT
	}
	if c.ITL == 0 {
		c.ITL = DefaultITL
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.PrefixCacheBlocks == 0 {
		c.PrefixCacheBlocks = DefaultPrefixCacheBlocks
	}
	if c.BlockSize == 0 {
		c.BlockSize = DefaultBlockSize
	}
	if c.DefaultMaxTokens == 0 {
		c.DefaultMaxTokens = DefaultMaxTokens
	}
	c.Models = append([]string(nil), c.Models...) // the caller keeps its slice
	return c
}

// Validate reports every invalid field, joined, each as a *FieldError that
// wraps ErrInvalidConfig. Zero values are valid (they mean the default), so
// Validate may be called before or after defaults are applied.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, &FieldError{Field: field, Reason: reason, kind: ErrInvalidConfig})
	}
	if hasControl(c.ID) {
		bad("id", "must not contain control characters")
	}
	if len(c.Models) == 0 {
		bad("models", "at least one model is required")
	}
	seen := make(map[string]bool, len(c.Models))
	for _, m := range c.Models {
		switch {
		case strings.TrimSpace(m) == "":
			bad("models", "model id must not be empty")
		case hasControl(m):
			bad("models", "model id "+m+" must not contain control characters")
		case seen[m]:
			bad("models", "duplicate model id "+m)
		}
		seen[m] = true
	}
	nonNeg := []struct {
		field string
		value int64
	}{
		{"ttft", int64(c.TTFT)},
		{"itl", int64(c.ITL)},
		{"max-concurrency", int64(c.MaxConcurrency)},
		{"max-queue", int64(c.MaxQueue)},
		{"prefix-cache-blocks", int64(c.PrefixCacheBlocks)},
		{"block-size", int64(c.BlockSize)},
		{"default-max-tokens", int64(c.DefaultMaxTokens)},
	}
	for _, f := range nonNeg {
		if f.value < 0 {
			bad(f.field, "must be >= 0")
		}
	}
	return errors.Join(errs...)
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
