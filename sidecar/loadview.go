package sidecar

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/routing"
)

// LoadConfig tunes how this sidecar publishes its load view. Zero values
// mean the defaults. The README's fleet budget explains the numbers.
type LoadConfig struct {
	// Period is the nominal publish period. Default 2s.
	Period time.Duration
	// Jitter spreads publishes of a fleet over ±Jitter×Period so that
	// sidecars started together do not write together. Default 0.2.
	Jitter float64
	// MinChange is the change in one instance's in-flight count that makes a
	// publish worth its write (or 20% of the last published count, if more);
	// smaller moves wait for the heartbeat. A breaker change always counts.
	// Default 2.
	MinChange int64
	// FleetWriteBudget is the registry writes per second that the load
	// records of the whole fleet may cost. Each sidecar stretches its period
	// to max(Period, fleet size / FleetWriteBudget), the fleet size being
	// the peers it sees plus itself. Default 100.
	FleetWriteBudget float64
	// Recent keeps an instance in the record for this long after its last
	// request. Default 30s.
	Recent time.Duration
}

func (c LoadConfig) withDefaults() LoadConfig {
	setDefault(&c.Period, 2*time.Second)
	setDefault(&c.Jitter, 0.2)
	setDefault(&c.MinChange, 2)
	setDefault(&c.FleetWriteBudget, 100)
	setDefault(&c.Recent, 30*time.Second)
	return c
}

// Validate rejects values that would break the contract; the error names
// the flag.
func (c LoadConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Period < 0:
		return badField("load-period", c.Period, "must be > 0")
	case c.Jitter < 0 || c.Jitter >= 1:
		return badField("load-jitter", c.Jitter, "must be in [0, 1)")
	case c.FleetWriteBudget < 0:
		return badField("fleet-write-budget", c.FleetWriteBudget, "must be > 0")
	case c.MinChange < 0:
		return badField("load-min-change", c.MinChange, "must be >= 0")
	}
	return nil
}

// loadPublisher remembers what it last published, to skip writes that would
// say nothing new.
type loadPublisher struct {
	cfg      LoadConfig
	seq      uint64
	last     map[string]discovery.InstanceLoad
	lastAt   time.Time
	lastUsed map[string]usage
}

type usage struct {
	requests uint64
	at       time.Time
}

// PublishLoad publishes this sidecar's load record through pub every period
// (jittered, stretched to the fleet's write budget) until ctx is done, then
// removes it with pub.Close. A publish is skipped when no instance's
// in-flight count moved by MinChange since the last one, unless the record
// is two periods old: readers drop records older than three.
func (s *Server) PublishLoad(ctx context.Context, pub discovery.Publisher, cfg LoadConfig) error {
	cfg = cfg.withDefaults()
	p := &loadPublisher{cfg: cfg, last: map[string]discovery.InstanceLoad{}, lastUsed: map[string]usage{}}
	timer := time.NewTimer(p.jittered(cfg.Period))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return pub.Close(cctx)
		case <-timer.C:
		}
		now := s.now()
		period := p.period(s.fleetSize.Load())
		report, changed := p.build(s.router.Table(), s.conf().SidecarID, period, now)
		switch {
		case !changed && now.Sub(p.lastAt) < 2*period:
			s.metrics.publish("skipped")
		default:
			if err := pub.Publish(ctx, report); err != nil {
				s.metrics.publish("error")
				s.conf().Logger.Warn("publishing load failed", "err", err)
			} else {
				s.metrics.publish("ok")
				p.lastAt = now
				clear(p.last)
				for _, il := range report.Instances {
					p.last[il.ID] = il
				}
			}
		}
		timer.Reset(p.jittered(period))
	}
}

// period is the publish period for a fleet of n sidecars: Period, or longer
// when the fleet's records would exceed the write budget.
func (p *loadPublisher) period(n int64) time.Duration {
	byBudget := time.Duration(float64(max(n, 1)) / p.cfg.FleetWriteBudget * float64(time.Second))
	return max(p.cfg.Period, byBudget)
}

func (p *loadPublisher) jittered(d time.Duration) time.Duration {
	j := (rand.Float64()*2 - 1) * p.cfg.Jitter
	return time.Duration(float64(d) * (1 + j))
}

// build returns the record for the instances used within Recent and whether
// it differs from the last published one by at least MinChange.
func (p *loadPublisher) build(t *routing.Table, id string, period time.Duration, now time.Time) (discovery.LoadReport, bool) {
	p.seq++
	r := discovery.LoadReport{SidecarID: id, Seq: p.seq, PeriodMillis: period.Milliseconds(), Instances: []discovery.InstanceLoad{}}
	changed := false
	seen := map[string]bool{}
	if t != nil {
		for _, ep := range t.Endpoints() {
			l, in := ep.Load, ep.Instance.ID
			u, ok := p.lastUsed[in]
			if !ok || l.Requests() != u.requests || l.InFlight() > 0 {
				u = usage{requests: l.Requests(), at: now}
				p.lastUsed[in] = u
			}
			if now.Sub(u.at) > p.cfg.Recent {
				continue
			}
			seen[in] = true
			il := discovery.InstanceLoad{ID: in, InFlight: l.InFlight(), TTFTMillis: float64(l.TTFT().Microseconds()) / 1000, Breaker: l.Breaker().String()}
			for _, m := range ep.Instance.Models {
				if mr := t.Model(m); mr != nil {
					q := mr.Queued()
					il.Queued.High += q.High
					il.Queued.Normal += q.Normal
					il.Queued.Low += q.Low
				}
			}
			if req := l.Requests(); req > 0 {
				il.ErrorRate = float64(l.Failures()) / float64(req)
			}
			r.Instances = append(r.Instances, il)
			if p.moved(il) {
				changed = true
			}
		}
	}
	for in := range p.last {
		if !seen[in] {
			changed = true // an instance left the record
		}
	}
	for in := range p.lastUsed {
		if !seen[in] && (t == nil || t.Endpoint(in) == nil) {
			delete(p.lastUsed, in)
		}
	}
	return r, changed
}

// moved reports whether il differs from the last published record of its
// instance enough to be worth a write.
func (p *loadPublisher) moved(il discovery.InstanceLoad) bool {
	last, ok := p.last[il.ID]
	if !ok || last.Breaker != il.Breaker {
		return true
	}
	d := il.InFlight - last.InFlight
	return max(d, -d) >= max(p.cfg.MinChange, last.InFlight/5)
}

// FollowPeers feeds the peers' fresh in-flight counts into the routing
// counters until ctx is done, so that load-aware pickers see the fleet.
func (s *Server) FollowPeers(ctx context.Context, src discovery.LoadSource) {
	for peers := range src.WatchLoad(ctx) {
		s.applyPeers(peers)
	}
}

func (s *Server) applyPeers(peers discovery.PeerLoads) {
	sum := map[string]int64{}
	for _, r := range peers {
		if r.SidecarID == s.conf().SidecarID {
			continue
		}
		for _, il := range r.Instances {
			sum[il.ID] += il.InFlight
		}
	}
	s.peerLoad.Store(&sum)
	s.fleetSize.Store(int64(len(peers)) + 1)
	s.refreshPeers()
}

// refreshPeers applies the last peer sums to the current table's counters,
// also after a table swap brings new instances.
func (s *Server) refreshPeers() {
	t := s.router.Table()
	p := s.peerLoad.Load()
	if t == nil || p == nil {
		return
	}
	for _, ep := range t.Endpoints() {
		ep.Load.SetPeerInFlight((*p)[ep.Instance.ID])
	}
}
