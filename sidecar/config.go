package sidecar

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/routing"
)

// Config is the sidecar's configuration. Zero values mean the documented
// defaults; Validate rejects bad values with the name of the flag that sets
// them. Nothing is silently corrected.
type Config struct {
	// SidecarID names this sidecar in /state and in its load record.
	// Default: the host name.
	SidecarID string
	// Policy is the routing policy (routing.Policies). Default "auto".
	Policy string
	// MaxBodyBytes bounds a request body. Default 32 MiB.
	MaxBodyBytes int64
	// MaxHeaderBytes bounds request headers. Default 64 KiB.
	MaxHeaderBytes int
	// MaxHeaderCount bounds the number of request header fields (431 above).
	// Default 100.
	MaxHeaderCount int
	// BodyReadTimeout bounds how long a client may take to send its body, so
	// a slow sender cannot hold a connection and a buffer. Default 30s.
	BodyReadTimeout time.Duration
	// ReadHeaderTimeout bounds how long a client may take to send headers
	// (slowloris protection). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive client connections. Default 120s.
	IdleTimeout time.Duration
	// ConnectTimeout bounds dialing an instance. Default 2s.
	ConnectTimeout time.Duration
	// FirstByteTimeout bounds the wait for an instance's response headers
	// and, for an SSE stream (whose headers engines send at admission), for
	// its first body byte; a request that times out before anything reached
	// the client is retried. Prefill of a long prompt is slow, so the
	// default is generous: 120s.
	FirstByteTimeout time.Duration
	// ModelFirstByteTimeout overrides FirstByteTimeout per model (by the
	// name the request uses), for models whose prefill is much slower or
	// faster than the rest.
	ModelFirstByteTimeout map[string]time.Duration
	// ShutdownTimeout is how long open streams may finish after SIGTERM.
	// Default 30s.
	ShutdownTimeout time.Duration
	// MaxRetries is how many other instances a request may try after a
	// failure before its first response byte. Default 2; -1 disables.
	MaxRetries int
	// MaxIdleConnsPerHost sizes the keep-alive pool towards each instance.
	// Default 256.
	MaxIdleConnsPerHost int
	// StreamIdleTimeout ends a response whose instance sends nothing for
	// this long after its first byte (a hung engine mid-stream). Default 120s.
	StreamIdleTimeout time.Duration
	// AffinityPrefixBytes is how much of the prompt keys prefix affinity when
	// a request names no session. Default 256 bytes: about the length of a
	// shared system prompt's start, long enough to tell prompts apart.
	AffinityPrefixBytes int
	// Scrape tunes the reading of engines' own queue metrics.
	Scrape ScrapeConfig
	// Routing configures caps, queues and the affinity bound.
	Routing routing.Config
	// RetryBudget bounds retries to a fraction of recent requests.
	RetryBudget RetryBudget
	// Breaker configures the per-instance circuit breakers.
	Breaker breaker.Config
	// Admission holds a token bucket per priority. Zero admits everything.
	Admission routing.AdmissionConfig
	// AuthToken, when set, is the bearer token clients must send on /v1/ and
	// /state (401 otherwise). It is never forwarded to instances.
	AuthToken string
	// UpstreamAPIKey, when set, is sent to instances as a bearer token in
	// place of whatever Authorization the client sent.
	UpstreamAPIKey string
	// Logger receives operational logs; never prompts, completions or
	// Authorization headers. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultListen              = "127.0.0.1:8089"
	DefaultPolicy              = "auto"
	DefaultMaxBodyBytes        = 32 << 20
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultConnectTimeout      = 2 * time.Second
	DefaultFirstByteTimeout    = 120 * time.Second
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultStreamIdleTimeout   = 120 * time.Second
	DefaultMaxRetries          = 2
	DefaultMaxIdleConnsPerHost = 256
)

// maxRetriesLimit keeps retries within the router's exclusion list.
const maxRetriesLimit = 3

// ErrInvalidConfig marks a configuration error; the CLI exits 2 on it.
var ErrInvalidConfig = errors.New("sidecar: invalid configuration")

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	setDefault(&c.Policy, DefaultPolicy)
	setDefault(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&c.MaxHeaderCount, 100)
	setDefault(&c.BodyReadTimeout, 30*time.Second)
	setDefault(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&c.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&c.FirstByteTimeout, DefaultFirstByteTimeout)
	setDefault(&c.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&c.StreamIdleTimeout, DefaultStreamIdleTimeout)
	setDefault(&c.AffinityPrefixBytes, 256)
	setDefault(&c.MaxRetries, DefaultMaxRetries)
	setDefault(&c.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost)
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// firstByteTimeout is the first-byte timeout for requests to model.
func (c *Config) firstByteTimeout(model string) time.Duration {
	if d, ok := c.ModelFirstByteTimeout[model]; ok {
		return d
	}
	return c.FirstByteTimeout
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func badField(field string, v any, why string) error {
	return fmt.Errorf("%w: %s: %v: %s", ErrInvalidConfig, field, v, why)
}

// Validate checks c; the error names the flag of the bad field.
func (c Config) Validate() error {
	bad := badField
	if c.Policy != "" {
		if _, err := routing.NewPicker(c.Policy); err != nil {
			return bad("policy", c.Policy, fmt.Sprintf("must be one of %v", routing.Policies))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"read-header-timeout", c.ReadHeaderTimeout},
		{"body-read-timeout", c.BodyReadTimeout},
		{"idle-timeout", c.IdleTimeout},
		{"connect-timeout", c.ConnectTimeout},
		{"first-byte-timeout", c.FirstByteTimeout},
		{"shutdown-timeout", c.ShutdownTimeout},
		{"stream-idle-timeout", c.StreamIdleTimeout},
	} {
		if d.v < 0 {
			return bad(d.name, d.v, "must be >= 0 (0 means the default)")
		}
	}
	for model, d := range c.ModelFirstByteTimeout {
		if model == "" || d <= 0 {
			return bad("model-first-byte-timeout", model+"="+d.String(), "want MODEL=DURATION with a duration > 0")
		}
	}
	switch {
	case c.MaxBodyBytes < 0:
		return bad("max-body-bytes", c.MaxBodyBytes, "must be >= 0 (0 means 32 MiB)")
	case c.MaxHeaderCount < 0:
		return bad("max-header-count", c.MaxHeaderCount, "must be >= 0 (0 means 100)")
	case c.MaxHeaderBytes < 0:
		return bad("max-header-bytes", c.MaxHeaderBytes, "must be >= 0 (0 means 64 KiB)")
	case c.MaxRetries < -1 || c.MaxRetries > maxRetriesLimit:
		return bad("max-retries", c.MaxRetries, fmt.Sprintf("must be -1 (none) to %d", maxRetriesLimit))
	case c.MaxIdleConnsPerHost < 0:
		return bad("max-idle-conns-per-host", c.MaxIdleConnsPerHost, "must be >= 0")
	}
	if c.Scrape.Timeout < 0 {
		return bad("engine-scrape-timeout", c.Scrape.Timeout, "must be >= 0")
	}
	if c.AffinityPrefixBytes < 0 {
		return bad("affinity-prefix-bytes", c.AffinityPrefixBytes, "must be >= 0 (0 means 256)")
	}
	if err := c.Routing.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if err := c.RetryBudget.Validate(); err != nil {
		return err
	}
	if err := c.Breaker.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if err := c.Admission.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return nil
}
