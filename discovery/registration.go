package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Registrar puts one instance into a registry and keeps it there until told
// otherwise. discovery/etcd implements it (and discovery/consul will); the
// registry-agnostic policy of `blitzscale register` is KeepRegistered.
type Registrar interface {
	// Register writes in, or rewrites it if already registered.
	Register(ctx context.Context, in Instance) error
	// SetDraining rewrites the registered instance with Draining set.
	SetDraining(ctx context.Context, draining bool) error
	// Deregister removes the instance; a no-op when none is registered.
	Deregister(ctx context.Context) error
}

// ErrInvalidProbeConfig marks a ProbeConfig field that KeepRegistered rejects.
var ErrInvalidProbeConfig = errors.New("discovery: invalid probe configuration")

// ProbeConfig tells KeepRegistered how to health-check the engine and how to
// leave. Zero values mean the documented defaults.
type ProbeConfig struct {
	// BaseURL is the engine's HTTP root. Default "http://" + Instance.Address.
	BaseURL string
	// HealthPath is probed every Interval; a 2xx answer is healthy. Default
	// "/health". Only when it answers 404 or 405 (the engine has no such
	// route) is "/v1/models" probed instead: a 5xx from /health must count,
	// because an engine whose core died may still list its models.
	HealthPath string
	// Interval between probes. Default 2s.
	Interval time.Duration
	// Timeout of one probe request. Default 1s.
	Timeout time.Duration
	// FailuresToDrain consecutive failed probes mark the instance draining;
	// FailuresToRemove deregister it. The grace between the two is
	// (FailuresToRemove - FailuresToDrain) × Interval. Defaults 3 and 6.
	FailuresToDrain, FailuresToRemove int
	// DrainPeriod is how long the instance stays registered as draining after
	// ctx ends, so that every sidecar stops sending new requests before it
	// disappears. Default 5s.
	DrainPeriod time.Duration
	// DrainAbort, when closed, ends the drain wait at once (the CLI closes it
	// on a second SIGINT). Optional.
	DrainAbort <-chan struct{}
	// ShutdownTimeout bounds each registry call made after ctx ended. Default 5s.
	ShutdownTimeout time.Duration
	// Client sends the probes. Default: a client without overall timeout
	// (Timeout applies per probe).
	Client *http.Client
	// After is the clock: it returns a channel that fires after d. Default
	// time.After; tests inject one to step through probes without sleeping.
	After func(d time.Duration) <-chan time.Time
	// Logger receives state changes. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of ProbeConfig.
const (
	DefaultHealthPath       = "/health"
	FallbackHealthPath      = "/v1/models"
	DefaultProbeInterval    = 2 * time.Second
	DefaultProbeTimeout     = time.Second
	DefaultFailuresToDrain  = 3
	DefaultFailuresToRemove = 6
	DefaultDrainPeriod      = 5 * time.Second
	DefaultShutdownTimeout  = 5 * time.Second
)

func (c ProbeConfig) withDefaults(in Instance) ProbeConfig {
	if c.BaseURL == "" {
		c.BaseURL = "http://" + in.Address
	}
	c.BaseURL = strings.TrimSuffix(c.BaseURL, "/")
	if c.HealthPath == "" {
		c.HealthPath = DefaultHealthPath
	}
	if c.Interval == 0 {
		c.Interval = DefaultProbeInterval
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultProbeTimeout
	}
	if c.FailuresToDrain == 0 {
		c.FailuresToDrain = DefaultFailuresToDrain
	}
	if c.FailuresToRemove == 0 {
		c.FailuresToRemove = DefaultFailuresToRemove
	}
	if c.DrainPeriod == 0 {
		c.DrainPeriod = DefaultDrainPeriod
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{}
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate rejects a configuration with a message that names the bad field.
func (c ProbeConfig) Validate() error {
	switch {
	case c.HealthPath != "" && !strings.HasPrefix(c.HealthPath, "/"):
		return fmt.Errorf("%w: HealthPath %q: must start with '/'", ErrInvalidProbeConfig, c.HealthPath)
	case c.Interval < 0, c.Timeout < 0, c.DrainPeriod < 0, c.ShutdownTimeout < 0:
		return fmt.Errorf("%w: Interval, Timeout, DrainPeriod, ShutdownTimeout: must not be negative", ErrInvalidProbeConfig)
	case c.FailuresToDrain < 0:
		return fmt.Errorf("%w: FailuresToDrain %d: must be positive", ErrInvalidProbeConfig, c.FailuresToDrain)
	case c.FailuresToRemove != 0 && c.FailuresToRemove < max(c.FailuresToDrain, 1):
		return fmt.Errorf("%w: FailuresToRemove %d: must be at least FailuresToDrain", ErrInvalidProbeConfig, c.FailuresToRemove)
	}
	return nil
}

// KeepRegistered keeps in registered through reg while its engine answers
// probes, until ctx ends:
//
//   - the instance is registered after the first healthy probe (never
//     before: a starting engine gets no traffic);
//   - FailuresToDrain consecutive failed probes mark it draining,
//     FailuresToRemove deregister it; a healthy probe registers it again
//     (not draining);
//   - registry errors are logged and the step is retried at the next probe;
//   - when ctx ends, a registered instance is marked draining, stays so for
//     DrainPeriod (or until DrainAbort closes) and is deregistered.
//
// It returns nil after a clean shutdown, the deregistration error if that
// failed (the lease still removes the instance later), or an error wrapping
// ErrInvalidInstance or ErrInvalidProbeConfig at once.
func KeepRegistered(ctx context.Context, reg Registrar, in Instance, cfg ProbeConfig) error {
	if err := in.Validate(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults(in)
	log := cfg.Logger.With("instance", in.ID)
	in.Draining = false

	registered, draining, failures := false, false, 0
	for ctx.Err() == nil {
		if probe(ctx, cfg) {
			if failures > 0 {
				log.Info("discovery: engine healthy again", "after_failures", failures)
			}
			failures = 0
			if !registered || draining {
				if err := reg.Register(ctx, in); err != nil {
					log.Warn("discovery: register failed; retrying at the next probe", "error", err)
				} else {
					log.Info("discovery: instance registered", "address", in.Address)
					registered, draining = true, false
				}
			}
		} else if ctx.Err() == nil {
			failures++
			log.Warn("discovery: engine probe failed", "consecutive_failures", failures)
			if registered && !draining && failures >= cfg.FailuresToDrain {
				if err := reg.SetDraining(ctx, true); err != nil {
					log.Warn("discovery: mark draining failed; retrying at the next probe", "error", err)
				} else {
					log.Info("discovery: engine unhealthy; instance draining")
					draining = true
				}
			}
			if registered && failures >= cfg.FailuresToRemove {
				if err := reg.Deregister(ctx); err != nil {
					log.Warn("discovery: deregister failed; retrying at the next probe", "error", err)
				} else {
					log.Info("discovery: engine unhealthy; instance deregistered")
					registered, draining = false, false
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-cfg.After(cfg.Interval):
		}
	}
	return leave(ctx, reg, cfg, log, registered && !draining)
}

// leave drains and deregisters after ctx ended, with fresh contexts: the
// caller's is already cancelled.
func leave(ctx context.Context, reg Registrar, cfg ProbeConfig, log *slog.Logger, drain bool) error {
	bg := context.WithoutCancel(ctx)
	if drain {
		dctx, cancel := context.WithTimeout(bg, cfg.ShutdownTimeout)
		err := reg.SetDraining(dctx, true)
		cancel()
		if err != nil {
			log.Warn("discovery: mark draining on shutdown failed; deregistering now", "error", err)
		} else {
			log.Info("discovery: draining before deregistering", "drain_period", cfg.DrainPeriod)
			select {
			case <-cfg.After(cfg.DrainPeriod):
			case <-cfg.DrainAbort:
				log.Info("discovery: drain cut short")
			}
		}
	}
	// Deregister even when nothing is known to be registered: a failed
	// Register may have been completed by the registry's own retries.
	dctx, cancel := context.WithTimeout(bg, cfg.ShutdownTimeout)
	defer cancel()
	if err := reg.Deregister(dctx); err != nil {
		return fmt.Errorf("discovery: deregister: %w", err)
	}
	log.Info("discovery: instance deregistered")
	return nil
}

// probe reports whether the engine answers HealthPath (or, lacking that
// route, /v1/models) with a 2xx within Timeout.
func probe(ctx context.Context, cfg ProbeConfig) bool {
	code, err := get(ctx, cfg, cfg.HealthPath)
	if err == nil && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) && cfg.HealthPath != FallbackHealthPath {
		code, err = get(ctx, cfg, FallbackHealthPath)
	}
	return err == nil && code >= 200 && code < 300
}

func get(ctx context.Context, cfg ProbeConfig, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.BaseURL+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	// Read a bounded amount so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}
