package etcd

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/blitzscale/router/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Config is what every role of this package (Source, LoadSource, Publisher,
// Registrar) needs: a client, where the service lives in the keyspace, and
// how to behave when etcd fails. Zero values mean the documented defaults.
type Config struct {
	// Client talks to etcd (see Dial). Required. The caller owns it and
	// closes it after the roles using it are done.
	Client *clientv3.Client
	// Prefix roots every key. Default "/blitzscale"; no trailing '/'.
	Prefix string
	// Service names the service under <Prefix>/services/. Default "llm".
	Service string
	// Logger receives warnings about registry errors and invalid values.
	// Default slog.Default().
	Logger *slog.Logger
	// InitialBackoff is the first wait after a registry error; each further
	// consecutive error doubles it up to MaxBackoff. Every wait is jittered
	// to between half and all of its value so that a fleet does not retry in
	// step. Defaults 100ms and 5s.
	InitialBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds each unary call (get, put, grant, delete, revoke)
	// so that an unreachable etcd shows up as an error, not a hang. Default 5s.
	RequestTimeout time.Duration
	// WatchProgressInterval: a watch that has heard nothing for this long
	// asks etcd for a progress notification, and one whose request stays
	// unanswered for another interval is presumed stuck and re-established
	// by a full re-read, so a silently stalled stream cannot freeze the view.
	// Busy watches never ask. Default 30s.
	WatchProgressInterval time.Duration
}

// Defaults of Config.
const (
	DefaultPrefix         = "/blitzscale"
	DefaultService        = "llm"
	DefaultInitialBackoff = 100 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultWatchProgress  = 30 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Service == "" {
		c.Service = DefaultService
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
	if c.WatchProgressInterval == 0 {
		c.WatchProgressInterval = DefaultWatchProgress
	}
	return c
}

// Validate rejects a configuration with a message that names the bad field.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Client == nil:
		return fmt.Errorf("%w: Client: required", ErrInvalidConfig)
	case strings.HasSuffix(c.Prefix, "/"):
		return fmt.Errorf("%w: Prefix %q: must not end with '/'", ErrInvalidConfig, c.Prefix)
	case strings.Contains(c.Service, "/"):
		return fmt.Errorf("%w: Service %q: must not contain '/'", ErrInvalidConfig, c.Service)
	case c.InitialBackoff < 0:
		return fmt.Errorf("%w: InitialBackoff %v: must be positive", ErrInvalidConfig, c.InitialBackoff)
	case c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: MaxBackoff %v: must be at least InitialBackoff (%v)", ErrInvalidConfig, c.MaxBackoff, c.InitialBackoff)
	case c.RequestTimeout < 0:
		return fmt.Errorf("%w: RequestTimeout %v: must be positive", ErrInvalidConfig, c.RequestTimeout)
	case c.WatchProgressInterval < 0:
		return fmt.Errorf("%w: WatchProgressInterval %v: must be positive", ErrInvalidConfig, c.WatchProgressInterval)
	}
	return nil
}

// instancesPrefix is <prefix>/services/<service>/instances/ (DESIGN.md).
func (c Config) instancesPrefix() string {
	return c.Prefix + "/services/" + c.Service + "/instances/"
}

// loadPrefix is <prefix>/services/<service>/load/ (DESIGN.md).
func (c Config) loadPrefix() string {
	return c.Prefix + "/services/" + c.Service + "/load/"
}

// watcher returns the prefix watcher of c for prefix.
func (c Config) watcher(prefix string, stats *watchStats) *prefixWatcher {
	return &prefixWatcher{
		client:   c.Client,
		prefix:   prefix,
		backoff:  c.backoff(),
		timeout:  c.RequestTimeout,
		progress: c.WatchProgressInterval,
		log:      c.Logger,
		stats:    stats,
	}
}

func (c Config) backoff() discovery.Backoff {
	return discovery.Backoff{Initial: c.InitialBackoff, Max: c.MaxBackoff}
}
