package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/etcd"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/sidecar"
)

// engineSpec is one simulated engine of the heterogeneous fleet.
type engineSpec struct {
	ID          string        `json:"id"`
	Models      []string      `json:"models"`
	TTFT        time.Duration `json:"ttft_ns"`
	ITL         time.Duration `json:"itl_ns"`
	Slots       int           `json:"max_concurrency"`
	CacheBlocks int           `json:"prefix_cache_blocks"`
}

// engines: two fast engines, one mid-speed engine for the second model and
// two slow ones with half the slots, each with a prefix cache that holds
// only a few of the shared documents (a 2 KiB document is 32 blocks of 64
// bytes), so that where a prefix goes decides whether it hits.
var engines = []engineSpec{
	{ID: "fast-0", Models: []string{modelA}, TTFT: 60 * time.Millisecond, ITL: 5 * time.Millisecond, Slots: 8, CacheBlocks: 256},
	{ID: "fast-1", Models: []string{modelA, modelB}, TTFT: 60 * time.Millisecond, ITL: 5 * time.Millisecond, Slots: 8, CacheBlocks: 256},
	{ID: "mid-0", Models: []string{modelB}, TTFT: 100 * time.Millisecond, ITL: 8 * time.Millisecond, Slots: 8, CacheBlocks: 192},
	{ID: "slow-0", Models: []string{modelA}, TTFT: 180 * time.Millisecond, ITL: 15 * time.Millisecond, Slots: 4, CacheBlocks: 128},
	{ID: "slow-1", Models: []string{modelA}, TTFT: 180 * time.Millisecond, ITL: 15 * time.Millisecond, Slots: 4, CacheBlocks: 128},
}

// capacity is the fleet's throughput in requests per second when every
// request misses the prefix cache: the sum over engines of slots over the
// mean service time. It ignores how the two models split over the engines,
// so it is an upper bound that no policy reaches exactly.
func capacity(meanTokens float64) float64 {
	c := 0.0
	for _, e := range engines {
		service := e.TTFT.Seconds() + meanTokens*e.ITL.Seconds()
		c += float64(e.Slots) / service
	}
	return c
}

// runningEngine is one engine serving on loopback.
type runningEngine struct {
	spec engineSpec
	sim  *llmsim.Sim
	addr string
	srv  *http.Server
}

// cluster is what one run needs: engines registered under their own
// service name in the shared etcd, and zero (direct) or more sidecars.
type cluster struct {
	engines  []*runningEngine
	sidecars []*sidecar.Server
	urls     []string // sidecar base URLs, ending in /v1

	cancel  context.CancelFunc // stops sidecars and load followers
	stopPub context.CancelFunc // stops publishers (after the sidecars)
	wg      sync.WaitGroup
	closers []func()
}

// clusterConfig says how to build one run's cluster.
type clusterConfig struct {
	Service    string // etcd service name, unique per run
	Policy     string // "" for no sidecar (direct)
	Sidecars   int    // 1 = single; >1 = a fleet sharing load through etcd
	LoadPeriod time.Duration
	MetaCaps   bool // register max_concurrency = engine slots in the meta
	Seed       int64
	Endpoints  []string // etcd client URLs
	Registry   *clientv3.Client
	Logger     *slog.Logger
}

func startCluster(ctx context.Context, cfg clusterConfig) (*cluster, error) {
	c := &cluster{}
	ok := false
	defer func() {
		if !ok {
			c.close()
		}
	}()
	reg := etcd.Config{Client: cfg.Registry, Service: cfg.Service, Logger: cfg.Logger}
	for i, spec := range engines {
		e, err := startEngine(spec, cfg.Seed+int64(i))
		if err != nil {
			return nil, err
		}
		c.closers = append(c.closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if e.srv.Shutdown(sctx) != nil {
				_ = e.srv.Close()
			}
		})
		c.engines = append(c.engines, e)
		in := discovery.Instance{ID: spec.ID, Address: e.addr, Models: spec.Models, Meta: map[string]string{"engine": "llmsim"}}
		if cfg.MetaCaps {
			in.Meta["max_concurrency"] = strconv.Itoa(spec.Slots)
		}
		r, err := etcd.NewRegistrar(etcd.RegistrarConfig{Config: reg})
		if err != nil {
			return nil, err
		}
		if err := r.Register(ctx, in); err != nil {
			return nil, fmt.Errorf("register %s: %w", spec.ID, err)
		}
		c.closers = append(c.closers, func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = r.Deregister(dctx)
		})
	}
	if cfg.Policy == "" {
		ok = true
		return c, nil
	}
	runCtx, cancel := context.WithCancel(ctx)
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel, c.stopPub = cancel, stopPub
	for i := range cfg.Sidecars {
		if err := c.startSidecar(runCtx, pubCtx, cfg, i); err != nil {
			return nil, err
		}
	}
	if err := c.waitReady(ctx, len(engines)); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func startEngine(spec engineSpec, seed int64) (*runningEngine, error) {
	sim, err := llmsim.New(llmsim.Config{ID: spec.ID, Models: spec.Models, TTFT: spec.TTFT, ITL: spec.ITL,
		MaxConcurrency: spec.Slots, PrefixCacheBlocks: spec.CacheBlocks, Seed: seed})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("engine %s: %w", spec.ID, err)
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &runningEngine{spec: spec, sim: sim, addr: ln.Addr().String(), srv: srv}, nil
}

// startSidecar starts fleet member i with its own etcd client, source and,
// in a fleet, its own publisher and peer-load follower, as separate hosts
// would have.
func (c *cluster) startSidecar(runCtx, pubCtx context.Context, cfg clusterConfig, i int) error {
	client, err := etcd.Dial(etcd.DialConfig{Endpoints: cfg.Endpoints})
	if err != nil {
		return err
	}
	c.closers = append(c.closers, func() { _ = client.Close() })
	id := fmt.Sprintf("sidecar-%d", i)
	reg := etcd.Config{Client: client, Service: cfg.Service, Logger: cfg.Logger}
	src, err := etcd.NewSource(reg)
	if err != nil {
		return err
	}
	s, err := sidecar.New(sidecar.Config{SidecarID: id, Policy: cfg.Policy, Logger: cfg.Logger,
		ShutdownTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.sidecars = append(c.sidecars, s)
	c.urls = append(c.urls, "http://"+ln.Addr().String()+"/v1")
	c.wg.Go(func() {
		if err := s.Run(runCtx, ln, src); err != nil {
			cfg.Logger.Error("sidecar stopped", "sidecar", id, "err", err)
		}
	})
	if cfg.Sidecars < 2 {
		return nil
	}
	pub, err := etcd.NewPublisher(etcd.PublisherConfig{Config: reg, SidecarID: id})
	if err != nil {
		return err
	}
	peers, err := etcd.NewLoadSource(etcd.LoadSourceConfig{Config: reg, SidecarID: id})
	if err != nil {
		return err
	}
	c.wg.Go(func() { s.FollowPeers(runCtx, peers) })
	c.wg.Go(func() {
		if err := s.PublishLoad(pubCtx, pub, sidecar.LoadConfig{Period: cfg.LoadPeriod}); err != nil {
			cfg.Logger.Warn("load record removal", "sidecar", id, "err", err)
		}
	})
	return nil
}

// waitReady polls until every sidecar routes over all n engines.
func (c *cluster) waitReady(ctx context.Context, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready := 0
		for _, s := range c.sidecars {
			if s.Ready() && len(s.State().Instances) == n {
				ready++
			}
		}
		if ready == len(c.sidecars) {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("routing bench: sidecars did not see every engine within 20s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// directURLs lists, per model, the engines serving it: the plain client-side
// round-robin baseline that has no sidecar at all.
func (c *cluster) directURLs() map[string][]string {
	out := map[string][]string{}
	for _, e := range c.engines {
		for _, m := range e.spec.Models {
			out[m] = append(out[m], "http://"+e.addr+"/v1")
		}
	}
	return out
}

// trace prints, every period until stop is called, what the first sidecar
// sees (in flight and cap per instance, its queue) next to what each engine
// runs and queues: the view that explains a bad p99.
func (c *cluster) trace(w io.Writer, label string, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var b strings.Builder
			fmt.Fprintf(&b, "trace %s:", label)
			if len(c.sidecars) > 0 {
				st := c.sidecars[0].State()
				fmt.Fprintf(&b, " queued h/n/l %d/%d/%d;", st.Queued["high"], st.Queued["normal"], st.Queued["low"])
				for _, in := range st.Instances {
					fmt.Fprintf(&b, " %s %d/%d", in.ID, in.GlobalInFlight, in.Cap)
				}
				b.WriteString(" | engines")
			}
			for _, e := range c.engines {
				s := e.sim.Stats()
				fmt.Fprintf(&b, " %s run %d wait %d", e.spec.ID, s.Running, s.Waiting)
			}
			fmt.Fprintln(w, b.String())
		}
	})
	return func() { close(done); wg.Wait() }
}

// stats snapshots every engine's counters, by engine id.
func (c *cluster) stats() map[string]llmsim.Stats {
	out := make(map[string]llmsim.Stats, len(c.engines))
	for _, e := range c.engines {
		out[e.spec.ID] = e.sim.Stats()
	}
	return out
}

// close stops sidecars first (their streams have ended by then), then the
// publishers, which remove their records, then engines, registrations and
// clients in reverse order of creation.
func (c *cluster) close() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.stopPub != nil {
		c.stopPub()
	}
	c.wg.Wait()
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}
