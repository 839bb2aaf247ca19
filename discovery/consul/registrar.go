package consul

import (
	"context"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// RegistrarConfig configures a Registrar. Zero values mean the defaults.
//
// The registration carries a TTL check that the Registrar keeps passing,
// not an HTTP check on the engine: engine health is already probed by
// discovery.KeepRegistered, the same policy for every registry, which
// drains and deregisters an unhealthy engine; the TTL check makes the
// registration live with its registrant, like an etcd lease. A registrant
// that dies stops the heartbeat, its check turns critical after CheckTTL
// (out of routing: sidecars query ?passing), and the agent deregisters the
// instance DeregisterCriticalAfter later. Heartbeats are agent-local: the
// agent syncs an unchanged check to the servers only every few minutes, so
// they cost no Raft writes. Static registrations without a registrant use
// an HTTP check instead (deploy/consul).
type RegistrarConfig struct {
	Config
	// CheckTTL is the TTL of the instance's check. Default 10s; at least
	// 10s (DESIGN.md's bound on instance leases), so that a short agent
	// hiccup does not drop a live instance from every sidecar.
	CheckTTL time.Duration
	// HeartbeatInterval is how often the check is set passing, and a lost
	// registration (an agent restarted without its state) noticed and
	// restored. Default CheckTTL/3; less than CheckTTL.
	HeartbeatInterval time.Duration
	// DeregisterCriticalAfter is how long the check may stay critical
	// before the agent removes the instance. Default 1m, Consul's minimum
	// (its reaper runs every 30s, so removal takes up to 30s more).
	DeregisterCriticalAfter time.Duration
}

// Defaults and bounds of RegistrarConfig.
const (
	DefaultCheckTTL                = 10 * time.Second
	MinCheckTTL                    = 10 * time.Second
	DefaultDeregisterCriticalAfter = time.Minute
	MinDeregisterCriticalAfter     = time.Minute
)

// Validate rejects a configuration with a message that names the bad field.
func (c RegistrarConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	ttl := c.CheckTTL
	if ttl == 0 {
		ttl = DefaultCheckTTL
	}
	switch {
	case ttl < MinCheckTTL:
		return fmt.Errorf("%w: CheckTTL %v: must be at least %v", ErrInvalidConfig, c.CheckTTL, MinCheckTTL)
	case c.HeartbeatInterval < 0 || c.HeartbeatInterval >= ttl:
		return fmt.Errorf("%w: HeartbeatInterval %v: must be positive and below CheckTTL (%v)", ErrInvalidConfig, c.HeartbeatInterval, ttl)
	case c.DeregisterCriticalAfter != 0 && c.DeregisterCriticalAfter < MinDeregisterCriticalAfter:
		return fmt.Errorf("%w: DeregisterCriticalAfter %v: must be at least %v (Consul's minimum)", ErrInvalidConfig, c.DeregisterCriticalAfter, MinDeregisterCriticalAfter)
	}
	return nil
}

// Registrar registers one inference instance as service Config.Service with
// the local Consul agent and keeps its TTL check passing. It implements
// discovery.Registrar; discovery.KeepRegistered drives it. One Registrar
// holds at most one instance at a time.
type Registrar struct {
	cfg         Config
	ttl, beat   time.Duration
	deregAfter  time.Duration
	maintReason string

	mu    sync.Mutex
	in    discovery.Instance // the registered instance; ID "" when none
	maint bool               // maintenance enabled by us, or unknown (true)
	dirty bool               // the last apply failed: the heartbeat applies again
	stop  context.CancelFunc // ends the heartbeat
	done  chan struct{}      // closed when the heartbeat has exited
}

var _ discovery.Registrar = (*Registrar)(nil)

// NewRegistrar validates cfg and returns a Registrar.
func NewRegistrar(cfg RegistrarConfig) (*Registrar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registrar{cfg: cfg.Config.withDefaults(), ttl: cfg.CheckTTL, beat: cfg.HeartbeatInterval, deregAfter: cfg.DeregisterCriticalAfter,
		maintReason: "blitzscale: draining"}
	if r.ttl == 0 {
		r.ttl = DefaultCheckTTL
	}
	if r.beat == 0 {
		r.beat = r.ttl / 3
	}
	if r.deregAfter == 0 {
		r.deregAfter = DefaultDeregisterCriticalAfter
	}
	return r, nil
}

// checkID returns the id of the TTL check registered with instance id.
func checkID(id string) string { return "service:" + id }

// Register registers in with the agent (draining as given) and starts the
// heartbeat; Deregister stops it. Registering again rewrites the
// registration; a different id while one is held is an error (Deregister
// first). The Registrar holds in from the first attempt: after an error
// (the agent may have taken part of it, or all of it just as ctx ended)
// the registration is retried in the background until Deregister, which
// removes whatever the agent has. The first Register of a Registrar also
// turns maintenance mode off for the service unless in is draining: a
// registrant that died while draining leaves it on, and its successor must
// not stay out of routing for good. (To keep an instance out, stop its
// registrant.)
func (r *Registrar) Register(ctx context.Context, in discovery.Instance) error {
	reg, err := r.registration(in)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID != "" && r.in.ID != in.ID {
		return fmt.Errorf("consul: register %q: this registrar holds %q; deregister it first", in.ID, r.in.ID)
	}
	if r.in.ID == "" {
		r.maint = true // unknown: a previous process may have left it on
	}
	r.in = in
	if r.stop == nil {
		hctx, cancel := context.WithCancel(context.Background())
		r.stop, r.done = cancel, make(chan struct{})
		go r.heartbeat(hctx, r.done)
	}
	return r.applyLocked(ctx, reg, in.Draining)
}

// SetDraining marks the registered instance draining (or not): it enables
// the agent's maintenance mode for the service, which takes it out of every
// sidecar's ?passing query at once, and rewrites the registration with Meta
// draining=true for any reader that does not filter on health. It fails
// with ErrNotRegistered before Register.
func (r *Registrar) SetDraining(ctx context.Context, draining bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID == "" {
		return ErrNotRegistered
	}
	in := r.in
	in.Draining = draining
	reg, err := r.registration(in)
	if err != nil {
		return err
	}
	r.in = in
	return r.applyLocked(ctx, reg, draining)
}

// Deregister stops the heartbeat and removes the instance from the agent
// (its maintenance check goes with it). It does nothing when no instance is
// registered, and an instance the agent no longer knows counts as removed.
// If the agent cannot be reached, the check turns critical without the
// heartbeat and the agent removes the instance DeregisterCriticalAfter
// later.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	id, stop, done := r.in.ID, r.stop, r.done
	r.in, r.stop, r.done, r.maint, r.dirty = discovery.Instance{}, nil, nil, false, false
	r.mu.Unlock()
	if id == "" {
		return nil
	}
	if stop != nil {
		stop()
		<-done
	}
	dctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	err := r.cfg.Client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(dctx))
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("consul: deregister %q: %w", id, err)
	}
	return nil
}

// applyLocked writes reg to the agent and sets maintenance mode to match
// draining. Maintenance goes first when entering it (it stops new requests
// at once) and last when leaving it (the meta says not draining first).
func (r *Registrar) applyLocked(ctx context.Context, reg *api.AgentServiceRegistration, draining bool) error {
	err := r.writeLocked(ctx, reg, draining)
	r.dirty = err != nil
	return err
}

func (r *Registrar) writeLocked(ctx context.Context, reg *api.AgentServiceRegistration, draining bool) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	agent := r.cfg.Client.Agent()
	q := (&api.QueryOptions{}).WithContext(ctx)
	maintOn := false
	if draining && r.in.ID != "" {
		// Enter maintenance before anything else. A 404 means the agent
		// does not have the service (yet, or any more); it is registered
		// below and maintenance enabled after.
		err := agent.EnableServiceMaintenanceOpts(reg.ID, r.maintReason, q)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("consul: enable maintenance for %q: %w", reg.ID, err)
		}
		maintOn = err == nil
	}
	if err := agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: register %q: %w", reg.ID, err)
	}
	switch {
	case draining && !maintOn:
		if err := agent.EnableServiceMaintenanceOpts(reg.ID, r.maintReason, q); err != nil {
			return fmt.Errorf("consul: enable maintenance for %q: %w", reg.ID, err)
		}
		r.maint = true
	case draining:
		r.maint = true
	case r.maint:
		if err := agent.DisableServiceMaintenanceOpts(reg.ID, q); err != nil {
			return fmt.Errorf("consul: disable maintenance for %q: %w", reg.ID, err)
		}
		r.maint = false
	}
	return nil
}

// heartbeat keeps the TTL check passing until ctx ends. It writes the
// registration again when the last write failed, or when the agent no
// longer knows the check (it restarted without its state, or an operator
// deregistered the instance: then with maintenance mode if draining),
// backing off while that fails.
func (r *Registrar) heartbeat(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	timer := time.NewTimer(r.beat)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		r.mu.Lock()
		id, dirty := r.in.ID, r.dirty
		r.mu.Unlock()
		if id == "" {
			return // deregistered; Deregister is stopping us
		}
		var err error
		if dirty {
			err = r.restore(ctx, id, false)
		} else {
			hctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
			err = r.cfg.Client.Agent().UpdateTTLOpts(checkID(id), "blitzscale register: alive", api.HealthPassing, (&api.QueryOptions{}).WithContext(hctx))
			cancel()
			if err != nil && isNotFound(err) && ctx.Err() == nil {
				r.log("consul: registration lost; registering again", id, err)
				err = r.restore(ctx, id, true)
			}
		}
		if ctx.Err() != nil {
			return
		}
		next := r.beat
		if err != nil {
			next = min(r.cfg.backoff().Delay(failures), r.beat)
			failures++
			r.log("consul: heartbeat failed; retrying", id, err)
		} else {
			failures = 0
		}
		timer.Reset(next)
	}
}

// restore writes the registration of id again if it is still the one held.
// lost says the agent forgot the service, and its maintenance mode with it.
func (r *Registrar) restore(ctx context.Context, id string, lost bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.in.ID != id || ctx.Err() != nil {
		return nil // deregistered meanwhile
	}
	reg, err := r.registration(r.in)
	if err != nil {
		return err
	}
	if lost {
		r.maint = false
	}
	return r.applyLocked(ctx, reg, r.in.Draining)
}

func (r *Registrar) log(msg, id string, err error) {
	r.cfg.Logger.Warn(msg, "service", r.cfg.Service, "instance", id, "error", err)
}

// metaKey is what Consul accepts as a Meta key; "consul-" is reserved.
var metaKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidateInstance reports whether in can be registered in Consul: a valid
// instance whose Meta Consul accepts (keys of 1-128 letters, digits, '_'
// and '-', not "consul-..." and not "draining", which the Registrar sets
// from Draining; values of at most 512 bytes; at most 63 pairs). The
// composition root calls it before KeepRegistered, whose retries would
// otherwise only log the problem.
func ValidateInstance(in discovery.Instance) error {
	_, err := (&Registrar{cfg: Config{Service: DefaultService}}).registration(in)
	return err
}

// registration builds the agent registration of in: Name the service,
// Address and Port split from in.Address, one tag model=<m> per model, Meta
// from in.Meta plus draining=true when draining, Weights{Passing: weight,
// Warning: 1}, and the TTL check, registered passing: KeepRegistered calls
// Register only after a healthy probe.
func (r *Registrar) registration(in discovery.Instance) (*api.AgentServiceRegistration, error) {
	if err := in.Validate(); err != nil {
		return nil, fmt.Errorf("consul: register: %w", err)
	}
	host, portText, _ := net.SplitHostPort(in.Address) // Validate checked the form
	port, _ := strconv.Atoi(portText)
	meta := make(map[string]string, len(in.Meta)+1)
	for k, v := range in.Meta {
		switch {
		case k == MetaDraining:
			return nil, fmt.Errorf("%w: instance %q: meta[%q]: set by the registrar from Draining", ErrInvalidValue, in.ID, k)
		case !metaKey.MatchString(k) || strings.HasPrefix(k, "consul-"):
			return nil, fmt.Errorf("%w: instance %q: meta[%q]: Consul accepts keys of 1-128 letters, digits, '_' and '-', not starting with \"consul-\"", ErrInvalidValue, in.ID, k)
		case len(v) > 512:
			return nil, fmt.Errorf("%w: instance %q: meta[%q]: Consul accepts values of at most 512 bytes", ErrInvalidValue, in.ID, k)
		}
		meta[k] = v
	}
	if in.Draining {
		meta[MetaDraining] = "true"
	}
	if len(in.Meta) > 63 { // one more is draining=true
		return nil, fmt.Errorf("%w: instance %q: meta: %d pairs; at most 63 (Consul's limit is 64, one is kept for draining)", ErrInvalidValue, in.ID, len(in.Meta))
	}
	tags := make([]string, 0, len(in.Models))
	for _, m := range in.Models {
		tags = append(tags, ModelTagPrefix+m)
	}
	return &api.AgentServiceRegistration{
		ID:      in.ID,
		Name:    r.cfg.Service,
		Address: host,
		Port:    port,
		Tags:    tags,
		Meta:    meta,
		Weights: &api.AgentWeights{Passing: in.EffectiveWeight(), Warning: 1},
		Check: &api.AgentServiceCheck{
			CheckID:                        checkID(in.ID),
			Name:                           "blitzscale register heartbeat",
			TTL:                            r.ttl.String(),
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: r.deregAfter.String(),
		},
	}, nil
}
