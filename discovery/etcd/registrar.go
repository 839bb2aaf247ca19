package etcd

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
)

// RegistrarConfig configures a Registrar. Zero values mean the defaults.
type RegistrarConfig struct {
	Config
	// LeaseTTL is the TTL of the instance's lease, rounded up to whole
	// seconds: an instance whose registrant dies leaves the registry this
	// long after. Default 10s; at least 10s (DESIGN.md), so that a short
	// etcd hiccup does not drop a live instance from every sidecar.
	LeaseTTL time.Duration
}

// MinRegistrarLeaseTTL is the contract's lower bound on an instance lease.
const MinRegistrarLeaseTTL = 10 * time.Second

// Validate rejects a configuration with a message that names the bad field.
func (c RegistrarConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < MinRegistrarLeaseTTL {
		return fmt.Errorf("%w: LeaseTTL %v: must be at least %v", ErrInvalidConfig, c.LeaseTTL, MinRegistrarLeaseTTL)
	}
	return nil
}

// Registrar registers one inference instance at
// <Prefix>/services/<Service>/instances/<id> under a lease it keeps alive.
// It implements discovery.Registrar; discovery.KeepRegistered drives it.
// One Registrar holds at most one instance at a time.
type Registrar struct {
	cfg Config
	ttl time.Duration

	mu  sync.Mutex
	in  discovery.Instance // the registered instance; ID "" when none
	key *leasedKey
}

var _ discovery.Registrar = (*Registrar)(nil)

// NewRegistrar validates cfg and returns a Registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ttl := cfg.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLeaseTTL
	}
	return &Registrar{cfg: cfg.Config.withDefaults(), ttl: ttl}, nil
}

// Register writes in (draining as given) under the registrar's lease,
// granting it on first use. Registering again rewrites the value; a
// different id while one is registered is an error (Deregister first).
// After an error the write is retried in the background until Deregister.
func (r *Registrar) Register(ctx context.Context, in discovery.Instance) error {
	value, err := discovery.EncodeInstance(in)
	if err != nil {
		return fmt.Errorf("etcd: register: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID != "" && r.in.ID != in.ID {
		return fmt.Errorf("etcd: register %q: this registrar holds %q; deregister it first", in.ID, r.in.ID)
	}
	if r.key == nil || r.in.ID == "" {
		r.key = newLeasedKey(r.cfg, r.cfg.instancesPrefix()+in.ID, r.ttl)
	}
	r.in = in
	return r.key.put(ctx, value)
}

// SetDraining rewrites the registered instance with Draining set, which
// takes it out of new routing in every sidecar while its open streams
// finish. It fails with ErrNotRegistered before Register.
func (r *Registrar) SetDraining(ctx context.Context, draining bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID == "" {
		return ErrNotRegistered
	}
	in := r.in
	in.Draining = draining
	value, err := discovery.EncodeInstance(in)
	if err != nil {
		return fmt.Errorf("etcd: set draining: %w", err)
	}
	r.in = in
	return r.key.put(ctx, value)
}

// Deregister deletes the instance and revokes its lease. It does nothing
// when no instance is registered.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID == "" {
		return nil
	}
	r.in = discovery.Instance{}
	return r.key.release(ctx)
}
