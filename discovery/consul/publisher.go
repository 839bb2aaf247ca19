package consul

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
)

// PublisherConfig configures a Publisher. Zero values mean the defaults.
type PublisherConfig struct {
	Config
	// SidecarID names this sidecar's record: load/<SidecarID>. Required.
	SidecarID string
	// SessionTTL is the TTL of the session that holds the record. Consul
	// invalidates a session between one and two TTLs after its last renewal
	// (and at once when the node's serfHealth check fails), which deletes
	// the record: a sidecar that dies loses it 10-20s later by default; a
	// live but silent sidecar's record is aged out by readers after three
	// periods. Default 10s; Consul accepts 10s to 24h.
	SessionTTL time.Duration
	// RenewInterval is how often the session is renewed (and a lost one
	// noticed). Default SessionTTL/2; at most SessionTTL.
	RenewInterval time.Duration
}

// Defaults and bounds of PublisherConfig.
const (
	DefaultSessionTTL = 10 * time.Second
	MinSessionTTL     = 10 * time.Second
	MaxSessionTTL     = 24 * time.Hour
)

// Validate rejects a configuration with a message that names the bad field.
func (c PublisherConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := validateName("SidecarID", c.SidecarID); err != nil {
		return err
	}
	ttl := c.SessionTTL
	if ttl == 0 {
		ttl = DefaultSessionTTL
	}
	switch {
	case ttl < MinSessionTTL || ttl > MaxSessionTTL:
		return fmt.Errorf("%w: SessionTTL %v: must be between %v and %v (Consul's bounds)", ErrInvalidConfig, c.SessionTTL, MinSessionTTL, MaxSessionTTL)
	case c.RenewInterval < 0 || c.RenewInterval > ttl:
		return fmt.Errorf("%w: RenewInterval %v: must be positive and at most SessionTTL (%v)", ErrInvalidConfig, c.RenewInterval, ttl)
	}
	return nil
}

// Publisher writes this sidecar's load record to KV
// <KVPrefix>/services/<Service>/load/<SidecarID>, held by a session of its
// own with behaviour "delete" (DESIGN.md). It decides nothing about when to
// publish: the sidecar's publishing loop jitters, skips and bounds the rate.
type Publisher struct {
	key *heldKey
	id  string

	// mu is held through each Publish and Close, so that a Publish racing
	// Close cannot start a new session after it.
	mu     sync.Mutex
	closed bool
}

var _ discovery.Publisher = (*Publisher)(nil)

// NewPublisher validates cfg and returns a Publisher. The session is
// created on the first Publish.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.Config.withDefaults()
	ttl := cfg.SessionTTL
	if ttl == 0 {
		ttl = DefaultSessionTTL
	}
	renew := cfg.RenewInterval
	if renew == 0 {
		renew = ttl / 2
	}
	return &Publisher{
		key: &heldKey{
			client:     c.Client,
			key:        c.loadPrefix() + cfg.SidecarID,
			name:       "blitzscale-load " + c.Service + "/" + cfg.SidecarID,
			ttl:        ttl,
			renewEvery: renew,
			timeout:    c.RequestTimeout,
			backoff:    c.backoff(),
			log:        c.Logger,
		},
		id: cfg.SidecarID,
	}, nil
}

// Publish writes r as the record (one KV acquire). r.SidecarID must be
// empty (it is set) or equal the configured id; r must carry a positive
// PeriodMillis, which readers age it by. If the session was lost, a new one
// is created and the record acquired again. After an error the record is
// retried in the background until Close.
func (p *Publisher) Publish(ctx context.Context, r discovery.LoadReport) error {
	value, err := discovery.EncodeLoadReport(p.id, r)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidValue, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return p.key.put(ctx, value)
}

// Close destroys the session, which makes Consul delete the record. Later
// Publish calls fail with ErrClosed; Close is idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return p.key.release(ctx)
}
