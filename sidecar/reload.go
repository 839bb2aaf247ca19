package sidecar

import (
	"fmt"
	"reflect"

	"github.com/blitzscale/router/routing"
	"github.com/blitzscale/router/sidecar/internal/upstream"
)

// runtime is everything a reload may replace, swapped whole so that a
// request sees one consistent configuration.
type runtime struct {
	cfg       Config
	admission *routing.Admission
	retries   *retryBudget
	transport *upstream.Client
	// upstreamAuth is the ready-made Authorization value for instances.
	upstreamAuth []string
}

// newRuntime builds the runtime of cfg (defaults applied), reusing prev's
// transport when its settings did not change, so a reload keeps the
// keep-alive pool.
func newRuntime(cfg Config, prev *runtime) *runtime {
	rt := &runtime{cfg: cfg, admission: routing.NewAdmission(cfg.Admission), retries: newRetryBudget(cfg.RetryBudget)}
	if prev != nil && prev.cfg.ConnectTimeout == cfg.ConnectTimeout && prev.cfg.FirstByteTimeout == cfg.FirstByteTimeout &&
		prev.cfg.MaxIdleConnsPerHost == cfg.MaxIdleConnsPerHost {
		rt.transport = prev.transport
	} else {
		rt.transport = newTransport(cfg)
	}
	if cfg.UpstreamAPIKey != "" {
		rt.upstreamAuth = []string{"Bearer " + cfg.UpstreamAPIKey}
	}
	return rt
}

// Reload applies cfg without dropping a connection: policy, priorities and
// admission, caps and queues, retries, timeouts, body limit and secrets
// change for new requests; requests in flight finish as they started. The
// listener's own settings, the sidecar id, the breakers and the scraper are
// fixed for the process: a change to one of them is refused, as is any
// invalid value, and the old configuration stays in force.
func (s *Server) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	old := s.rt.Load()
	cfg = cfg.withDefaults()
	if cfg.SidecarID == "" {
		cfg.SidecarID = old.cfg.SidecarID
	}
	for _, f := range []struct {
		name      string
		was, next any
	}{
		{"sidecar-id", old.cfg.SidecarID, cfg.SidecarID},
		{"max-header-bytes", old.cfg.MaxHeaderBytes, cfg.MaxHeaderBytes},
		{"read-header-timeout", old.cfg.ReadHeaderTimeout, cfg.ReadHeaderTimeout},
		{"idle-timeout", old.cfg.IdleTimeout, cfg.IdleTimeout},
		{"breaker-*", old.cfg.Breaker, cfg.Breaker},
		{"engine-scrape-*", old.cfg.Scrape, cfg.Scrape},
	} {
		if !reflect.DeepEqual(f.was, f.next) {
			return fmt.Errorf("%w: %s: changes only with a restart (%v → %v)", ErrInvalidConfig, f.name, f.was, f.next)
		}
	}
	picker, err := routing.NewPicker(cfg.Policy)
	if err != nil {
		return fmt.Errorf("%w: policy: %v", ErrInvalidConfig, err)
	}
	if err := s.router.Reconfigure(cfg.Routing, picker); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	rt := newRuntime(cfg, old)
	s.rt.Store(rt)
	if rt.transport != old.transport {
		// Streams on the old pool finish; its idle connections go now.
		old.transport.Close()
	}
	return nil
}
