package etcd

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
	// LeaseTTL is the TTL of the lease the record hangs on, rounded up to
	// whole seconds. The lease is kept alive while the process lives, so a
	// sidecar that dies loses its record about LeaseTTL later; a live but
	// silent sidecar's record is aged out by readers after three periods.
	// Default 10s; at least 2s.
	LeaseTTL time.Duration
}

// Defaults and bounds of lease TTLs.
const (
	DefaultLeaseTTL      = 10 * time.Second
	MinPublisherLeaseTTL = 2 * time.Second
)

// Validate rejects a configuration with a message that names the bad field.
func (c PublisherConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if err := validateName("SidecarID", c.SidecarID); err != nil {
		return err
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < MinPublisherLeaseTTL {
		return fmt.Errorf("%w: LeaseTTL %v: must be at least %v", ErrInvalidConfig, c.LeaseTTL, MinPublisherLeaseTTL)
	}
	return nil
}

// Publisher writes this sidecar's load record to
// <Prefix>/services/<Service>/load/<SidecarID>, attached to the sidecar's
// own lease. It decides nothing about when to publish: the sidecar's
// publishing loop jitters, skips and bounds the rate.
type Publisher struct {
	key *leasedKey
	id  string

	mu     sync.Mutex
	closed bool
}

var _ discovery.Publisher = (*Publisher)(nil)

// NewPublisher validates cfg and returns a Publisher. The lease is granted
// on the first Publish.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.Config.withDefaults()
	ttl := cfg.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	return &Publisher{key: newLeasedKey(c, c.loadPrefix()+cfg.SidecarID, ttl), id: cfg.SidecarID}, nil
}

// Publish writes r as the record. r.SidecarID must be empty (it is set) or
// equal the configured id; r must carry a positive PeriodMillis, which
// readers age it by. If the lease was lost, a new one is granted and the
// record rewritten. After an error the record is retried in the background
// until Close, so a missed publish costs at most one period.
func (p *Publisher) Publish(ctx context.Context, r discovery.LoadReport) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	value, err := discovery.EncodeLoadReport(p.id, r)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidValue, err)
	}
	return p.key.put(ctx, value)
}

// Close deletes the record and revokes the lease. Later Publish calls fail
// with ErrClosed; Close is idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return p.key.release(ctx)
}
