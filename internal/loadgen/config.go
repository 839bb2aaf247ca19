package loadgen

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Load models of Config.Mode.
const (
	ModeOpen   = "open"   // fixed request rate, independent of responses
	ModeClosed = "closed" // fixed number of workers, one request each at a time
)

// Endpoints of Config.Endpoint.
const (
	EndpointChat        = "chat"        // POST /chat/completions with messages
	EndpointCompletions = "completions" // POST /completions with a prompt
)

// Defaults applied by Run to zero fields of Config.
const (
	DefaultConcurrency = 1
	DefaultMaxTokens   = 16
	DefaultPromptBytes = 64
	DefaultTimeout     = 60 * time.Second
	DefaultDrain       = 10 * time.Second
	// DefaultMaxInflight bounds the open loop's requests in flight, so that a
	// dead server costs goroutines and sockets up to this bound and no more.
	DefaultMaxInflight = 20000
)

// Config is one load run. Zero fields take the defaults above; Validate
// rejects bad values with the name of the flag that sets them.
type Config struct {
	// URLs are base URLs ending in the API version, e.g.
	// http://127.0.0.1:8089/v1. Requests go round-robin over them, so that
	// "direct to the engines" can spread load as a proxy would. Required.
	URLs []string
	// Model is the model field of every request. Required.
	Model string
	// Mode is ModeOpen or ModeClosed. Required.
	Mode string
	// Rate is the open loop's requests per second; required there.
	Rate float64
	// Concurrency is the closed loop's number of workers. Default 1.
	Concurrency int
	// Duration is how long requests are sent and measured. Required.
	Duration time.Duration
	// Warmup runs the same load before Duration without recording it, so
	// that connections are open and pools are warm when measuring starts.
	// Default 0.
	Warmup time.Duration
	// Ramp spreads the closed loop's worker starts evenly over this time,
	// so that thousands of workers do not dial at the same instant. It is
	// part of Warmup when both are set. Default 0 (all at once).
	Ramp time.Duration
	// Drain is how long requests still in flight at the end may finish;
	// those still running then are cancelled and counted as incomplete, not
	// as errors. Default 10s; negative cancels them at once (for long
	// streams that are only there to be held open).
	Drain time.Duration
	// Timeout bounds one request, headers to last byte. Default 60s.
	Timeout time.Duration
	// MaxInflight bounds the open loop's requests in flight; when reached,
	// sends wait, and the wait counts in their latency. Default 20000.
	MaxInflight int
	// Stream asks for server-sent events (and records TTFT and ITL).
	Stream bool
	// MaxTokens is the max_tokens of every request. Default 16.
	MaxTokens int
	// PromptBytes is the size of the prompt text. Default 64.
	PromptBytes int
	// Endpoint is EndpointChat or EndpointCompletions. Default chat.
	Endpoint string
	// SamePrompt sends one identical prompt. By default each prompt starts
	// with a unique number, so that prefix caches and prefix affinity see
	// distinct prompts, as they would from many users.
	SamePrompt bool
}

// ErrInvalidConfig is wrapped by every error of Validate.
var ErrInvalidConfig = errors.New("loadgen: invalid config")

func badField(flag string, v any, why string) error {
	return fmt.Errorf("%w: %s: %v: %s", ErrInvalidConfig, flag, v, why)
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.Concurrency, DefaultConcurrency)
	set(&c.MaxTokens, DefaultMaxTokens)
	set(&c.PromptBytes, DefaultPromptBytes)
	set(&c.MaxInflight, DefaultMaxInflight)
	if c.Endpoint == "" {
		c.Endpoint = EndpointChat
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	return c
}

// Validate checks c; the error names the flag of the first bad field.
func (c Config) Validate() error {
	if len(c.URLs) == 0 {
		return badField("url", "", "at least one base URL is required")
	}
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return badField("url", u, "want an http(s) base URL such as http://127.0.0.1:8089/v1")
		}
	}
	switch {
	case strings.TrimSpace(c.Model) == "":
		return badField("model", c.Model, "required")
	case c.Mode != ModeOpen && c.Mode != ModeClosed:
		return badField("mode", c.Mode, "want open or closed")
	case c.Mode == ModeOpen && !(c.Rate > 0 && c.Rate <= 1e6):
		return badField("rate", c.Rate, "open loop needs a rate in (0, 1e6] requests per second")
	case c.Concurrency < 0:
		return badField("concurrency", c.Concurrency, "must be >= 0 (0 means 1)")
	case c.Duration <= 0:
		return badField("duration", c.Duration, "must be > 0")
	case c.Warmup < 0:
		return badField("warmup", c.Warmup, "must be >= 0")
	case c.Ramp < 0:
		return badField("ramp", c.Ramp, "must be >= 0")
	case c.Timeout < 0:
		return badField("timeout", c.Timeout, "must be >= 0 (0 means 60s)")
	case c.MaxInflight < 0:
		return badField("max-inflight", c.MaxInflight, "must be >= 0 (0 means 20000)")
	case c.MaxTokens < 0:
		return badField("max-tokens", c.MaxTokens, "must be >= 0 (0 means 16)")
	case c.PromptBytes < 0:
		return badField("prompt-bytes", c.PromptBytes, "must be >= 0 (0 means 64)")
	case c.Endpoint != "" && c.Endpoint != EndpointChat && c.Endpoint != EndpointCompletions:
		return badField("endpoint", c.Endpoint, "want chat or completions")
	}
	return nil
}
