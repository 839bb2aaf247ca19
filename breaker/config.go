package breaker

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Defaults applied by NewSet to zero Config fields.
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultCoolDown            = 5 * time.Second
	DefaultProbePath           = "/health"
	DefaultProbeInterval       = time.Second
	DefaultProbeTimeout        = time.Second
)

// windowBuckets is how many buckets the closed-state window rolls over
// (gobreaker BucketPeriod = Window/windowBuckets). Ten keeps the ratio smooth:
// a window slides by a tenth at a time instead of dropping all its counts at
// once, as a fixed gobreaker Interval would.
const windowBuckets = 10

// MinWindow is the smallest Window Validate accepts: ten buckets of a
// millisecond each.
const MinWindow = windowBuckets * time.Millisecond

// Config configures a Set. Zero means the default stated on each field;
// Validate rejects bad values and nothing is silently corrected.
type Config struct {
	// ConsecutiveFailures trips a closed breaker after this many failures in
	// a row (Ignored outcomes neither break nor extend the run). Default 5.
	ConsecutiveFailures uint32
	// FailureRatio trips a closed breaker when failures/(failures+successes)
	// within Window reaches it, provided MinRequests outcomes were counted.
	// Must be in (0,1]. Default 0.5.
	FailureRatio float64
	// MinRequests is the volume of counted outcomes (failures plus successes,
	// Ignored excluded) within Window below which the ratio rule is not
	// applied, so two failures out of three requests trip nothing. Default 20.
	MinRequests uint32
	// Window is the rolling window of counts in the closed state (gobreaker
	// Interval, split into ten BucketPeriods). At least MinWindow. Default 10s.
	Window time.Duration
	// CoolDown is how long a breaker stays open before it becomes half-open
	// and admits one trial (gobreaker Timeout). Default 5s.
	CoolDown time.Duration
	// ProbePath is the path Run GETs on half-open instances; a 2xx answer
	// closes the breaker. Must start with '/'. Default "/health".
	ProbePath string
	// ProbeInterval is how often Run looks at open and half-open instances:
	// it bounds both the delay before the lazy open→half-open transition is
	// reported and the delay before a recovered instance is probed.
	// Default 1s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, connection included. Default 1s.
	ProbeTimeout time.Duration
	// Client sends probes. Default: a client with no proxy and no
	// keep-alives, so a probe never reuses a connection to a dead engine and
	// leaves nothing idle behind.
	Client *http.Client
	// OnStateChange, if set, is called for every transition of every
	// instance's breaker, including the lazy open→half-open one, in order
	// per instance, never under a breaker's lock (it may call Set methods).
	// It is not called for instances that Sync has dropped. Default nil.
	OnStateChange func(instanceID string, from, to State)
	// Logger receives transitions (info) and probe failures (debug).
	// Default: discard.
	Logger *slog.Logger
}

// Validate reports the first bad field, naming it. Zero values are valid:
// they mean the defaults.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s %v: %s", ErrInvalidConfig, field, v, why)
	}
	switch {
	case c.FailureRatio != 0 && !(c.FailureRatio > 0 && c.FailureRatio <= 1):
		// The negated form also rejects NaN; ±Inf fails the range.
		return bad("failure-ratio", c.FailureRatio, "must be in (0,1]")
	case c.Window < 0 || (c.Window > 0 && c.Window < MinWindow):
		return bad("window", c.Window, fmt.Sprintf("must be at least %v", MinWindow))
	case c.CoolDown < 0:
		return bad("cool-down", c.CoolDown, "must not be negative")
	case c.ProbePath != "" && !strings.HasPrefix(c.ProbePath, "/"):
		return bad("probe-path", fmt.Sprintf("%q", c.ProbePath), "must start with '/'")
	case c.ProbeInterval < 0:
		return bad("probe-interval", c.ProbeInterval, "must not be negative")
	case c.ProbeTimeout < 0:
		return bad("probe-timeout", c.ProbeTimeout, "must not be negative")
	}
	return nil
}

// withDefaults returns c with every zero field replaced by its default.
func (c Config) withDefaults() Config {
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = DefaultFailureRatio
	}
	if c.MinRequests == 0 {
		c.MinRequests = DefaultMinRequests
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.CoolDown == 0 {
		c.CoolDown = DefaultCoolDown
	}
	if c.ProbePath == "" {
		c.ProbePath = DefaultProbePath
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true,
		}}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
