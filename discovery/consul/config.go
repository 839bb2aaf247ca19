package consul

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// Config is what every role of this package (Source, LoadSource, Publisher,
// Registrar) needs: a client, where the service lives, and how to behave
// when Consul fails or is slow. Zero values mean the documented defaults.
type Config struct {
	// Client talks to the local Consul agent (see Dial). Required. It holds
	// no resources that need closing.
	Client *api.Client
	// Service is the Consul service name of the inference instances, and the
	// <service> segment of the load records' keys. Default "llm".
	Service string
	// KVPrefix roots the load records:
	// <KVPrefix>/services/<Service>/load/<sidecar-id>. Default "blitzscale"
	// (DESIGN.md); no leading or trailing '/', as Consul KV keys have none.
	KVPrefix string
	// Logger receives warnings about registry errors and invalid entries.
	// Default slog.Default().
	Logger *slog.Logger
	// InitialBackoff is the first wait after a registry error; each further
	// consecutive error doubles it up to MaxBackoff. Every wait is jittered
	// to between half and all of its value so that a fleet does not retry in
	// step. Defaults 100ms and 5s.
	InitialBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds every call that does not block (session create,
	// renew and destroy, KV acquire, agent registration, a query with index
	// 0) and is the slack added to a blocking query's deadline. Default 5s.
	RequestTimeout time.Duration
	// WaitTime is the longest a blocking query is held by Consul when nothing
	// changes (its wait parameter). Consul adds up to WaitTime/16 of jitter,
	// so each blocking request's deadline is WaitTime + WaitTime/16 +
	// RequestTimeout: a half-dead connection fails after that instead of
	// hanging. Default 30s, far below Consul's 5m, so that a silently dead
	// connection is noticed within about 37s; at most 10m (Consul's cap).
	WaitTime time.Duration
	// MaxStale bounds how old a stale read may be: a response whose
	// X-Consul-LastContact exceeds it is dropped and the query is repeated
	// in consistent mode (through the leader). Default 10s.
	MaxStale time.Duration
	// QueryInterval and QueryBurst pace every blocking-query loop with a
	// token bucket: on average at most one query per QueryInterval, with
	// QueryBurst back to back after a quiet spell. A query that Consul
	// answers at once (an index that moves on every write, a buggy index)
	// therefore cannot spin. Defaults 250ms and 3. The LoadSource spaces its
	// queries further as the fleet grows (LoadSourceConfig.RecordsPerSecond).
	QueryInterval time.Duration
	QueryBurst    int
}

// Defaults of Config.
const (
	DefaultService        = "llm"
	DefaultKVPrefix       = "blitzscale"
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultWaitTime       = 30 * time.Second
	MaxWaitTime           = 10 * time.Minute
	DefaultMaxStale       = 10 * time.Second
	DefaultQueryInterval  = 250 * time.Millisecond
	DefaultQueryBurst     = 3
)

func (c Config) withDefaults() Config {
	if c.Service == "" {
		c.Service = DefaultService
	}
	if c.KVPrefix == "" {
		c.KVPrefix = DefaultKVPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.InitialBackoff == 0 {
		c.InitialBackoff = DefaultInitialBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WaitTime == 0 {
		c.WaitTime = DefaultWaitTime
	}
	if c.MaxStale == 0 {
		c.MaxStale = DefaultMaxStale
	}
	if c.QueryInterval == 0 {
		c.QueryInterval = DefaultQueryInterval
	}
	if c.QueryBurst == 0 {
		c.QueryBurst = DefaultQueryBurst
	}
	return c
}

// Validate rejects a configuration with a message that names the bad field.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Client == nil:
		return fmt.Errorf("%w: Client: required (see Dial)", ErrInvalidConfig)
	case strings.ContainsAny(c.Service, "/ \t\r\n"):
		return fmt.Errorf("%w: Service %q: must not contain '/' or white space", ErrInvalidConfig, c.Service)
	case strings.HasPrefix(c.KVPrefix, "/") || strings.HasSuffix(c.KVPrefix, "/"):
		return fmt.Errorf("%w: KVPrefix %q: must not start or end with '/'", ErrInvalidConfig, c.KVPrefix)
	case c.InitialBackoff < 0:
		return fmt.Errorf("%w: InitialBackoff %v: must be positive", ErrInvalidConfig, c.InitialBackoff)
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: MaxBackoff %v: must be at least InitialBackoff (%v)", ErrInvalidConfig, c.MaxBackoff, c.InitialBackoff)
	case c.RequestTimeout < 0:
		return fmt.Errorf("%w: RequestTimeout %v: must be positive", ErrInvalidConfig, c.RequestTimeout)
	case c.WaitTime < 0 || c.WaitTime > MaxWaitTime:
		return fmt.Errorf("%w: WaitTime %v: must be positive and at most %v", ErrInvalidConfig, c.WaitTime, MaxWaitTime)
	case c.MaxStale < 0:
		return fmt.Errorf("%w: MaxStale %v: must be positive", ErrInvalidConfig, c.MaxStale)
	case c.QueryInterval < 0:
		return fmt.Errorf("%w: QueryInterval %v: must be positive", ErrInvalidConfig, c.QueryInterval)
	case c.QueryBurst < 0:
		return fmt.Errorf("%w: QueryBurst %d: must be positive", ErrInvalidConfig, c.QueryBurst)
	}
	return nil
}

// loadPrefix is <KVPrefix>/services/<Service>/load/ (DESIGN.md).
func (c Config) loadPrefix() string {
	return c.KVPrefix + "/services/" + c.Service + "/load/"
}

func (c Config) backoff() discovery.Backoff {
	return discovery.Backoff{Initial: c.InitialBackoff, Max: c.MaxBackoff}
}

// validateName checks an id that becomes the last segment of a key.
func validateName(field, name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\r\n") {
		return fmt.Errorf("%w: %s %q: required, without '/' or white space", ErrInvalidConfig, field, name)
	}
	return nil
}
