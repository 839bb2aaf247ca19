// Command routing is the routing experiment of issue 4 (`make
// bench-routing`): it runs every routing policy of the sidecar on the same
// seeded workload against heterogeneous simulated engines on loopback, with
// one sidecar and with a fleet of sidecars sharing load through an embedded
// etcd, and writes a table, results.json, report.md and a latency plot.
//
// Everything runs in this process over real sockets: the engines
// (internal/llmsim), the embedded etcd, the sidecars and the open-loop
// client. The engines' latencies are timers, so the run needs little CPU;
// the numbers still depend on a quiet machine (see docs/routing-experiment.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blitzscale/router/discovery/etcd"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/routing"
)

// options are the command's flags.
type options struct {
	duration, warmup, drain, loadPeriod time.Duration
	trace                               time.Duration
	seed                                uint64
	out                                 string
	load, floodLoad, highLoad           float64
	fleet                               int
	policies, topologies, capsPolicies  string
	parallel                            int
	direct, priority                    bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("routing", flag.ContinueOnError)
	fs.IntVar(&o.parallel, "parallel", 2, "runs at once; each needs little CPU, but on a busy machine 1 is the cleanest")
	fs.DurationVar(&o.duration, "duration", 16*time.Second, "measured time of each run (after the warmup)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load sent before each measured window and left out of the numbers")
	fs.DurationVar(&o.drain, "drain", 5*time.Second, "how long requests may run after the last send; still running then counts as incomplete")
	fs.DurationVar(&o.loadPeriod, "load-period", 200*time.Millisecond, "load publishing period of the fleet's sidecars")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the workload and the engines")
	fs.StringVar(&o.out, "out", "bench/out/routing", "directory for results.json, report.md and routing-latency.png")
	fs.Float64Var(&o.load, "load", 0.8, "offered load of the main workload, as a fraction of the engines' capacity without prefix hits")
	fs.Float64Var(&o.highLoad, "high-load", 0.2, "priority experiment: high-priority load, as a fraction of capacity")
	fs.Float64Var(&o.floodLoad, "flood-load", 2, "priority experiment: low-priority flood, as a multiple of capacity")
	fs.IntVar(&o.fleet, "fleet", 4, "sidecars in the fleet topology")
	fs.StringVar(&o.policies, "policies", "round-robin,random,least-load,p2c,affinity,auto", "policies to compare (routing.Policies)")
	fs.StringVar(&o.topologies, "topologies", "single,fleet", "single, fleet or both")
	fs.BoolVar(&o.direct, "direct", true, "also run the no-sidecar baseline (client-side round-robin straight to the engines)")
	fs.BoolVar(&o.priority, "priority", true, "also run the priority experiment (high-priority latency under a low-priority flood)")
	fs.StringVar(&o.capsPolicies, "caps-policies", "round-robin,auto", "policies run once more with every engine registered with meta max_concurrency = its slots; empty: none")
	fs.DurationVar(&o.trace, "trace", 0, "print the first sidecar's view (in flight/cap per instance, queue) and the engines' queues at this period; 0 = off")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case o.duration <= 0:
		return o, fmt.Errorf("duration: %v: must be > 0", o.duration)
	case o.warmup < 0:
		return o, fmt.Errorf("warmup: %v: must be >= 0", o.warmup)
	case o.load <= 0 || o.highLoad <= 0 || o.floodLoad < 0:
		return o, fmt.Errorf("load, high-load, flood-load: must be > 0")
	case o.parallel < 1:
		return o, fmt.Errorf("parallel: %d: must be >= 1", o.parallel)
	case o.fleet < 2:
		return o, fmt.Errorf("fleet: %d: a fleet has at least 2 sidecars", o.fleet)
	}
	for _, p := range append(split(o.policies), split(o.capsPolicies)...) {
		if _, err := routing.NewPicker(p); err != nil {
			return o, fmt.Errorf("policies: %w", err)
		}
	}
	for _, t := range split(o.topologies) {
		if t != "single" && t != "fleet" {
			return o, fmt.Errorf("topologies: %q: want single or fleet", t)
		}
	}
	return o, nil
}

func split(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// runSpec is one run of the plan.
type runSpec struct {
	scenario, topology, policy string
	sidecars                   int
	metaCaps                   bool
	w                          workload
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "routing bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "routing bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	began := time.Now()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "blitz-bench-routing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	emb, err := etcd.StartEmbedded(ctx, etcd.EmbeddedConfig{Dir: dir, Logger: logger})
	if err != nil {
		return fmt.Errorf("embedded etcd: %w", err)
	}
	defer emb.Close()
	client, err := etcd.Dial(etcd.DialConfig{Endpoints: emb.Endpoints()})
	if err != nil {
		return err
	}
	defer client.Close()

	wc := defaultWorkload
	wc.Seed = o.seed
	meanTokens := wc.meanTokens()
	capRPS := capacity(meanTokens)
	plan := buildPlan(o, wc, capRPS)
	env := environment{GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), LoadAvgStart: loadAvg(),
		CapacityRPS: capRPS, MeanTokens: meanTokens, Options: o.describe(), Engines: engines, Workload: wc}
	fmt.Printf("routing bench: %d runs of %v + %v warmup, %d at a time; capacity %.1f req/s (no prefix hits), main load %.1f req/s; load average %s\n",
		len(plan), o.duration, o.warmup, o.parallel, capRPS, o.load*capRPS, env.LoadAvgStart)

	// Runs are timers more than CPU, so -parallel of them share the machine
	// at once; each has its own engines, sidecars, service name and client.
	results := make([]result, len(plan))
	errs := make([]error, len(plan))
	sem := make(chan struct{}, o.parallel)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, spec := range plan {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			d := newDriver(o.drain+o.duration+o.warmup+time.Minute, o.drain)
			res, err := execute(ctx, spec, clusterConfig{
				Service: fmt.Sprintf("bench-%02d", i), Policy: spec.policy, Sidecars: spec.sidecars,
				LoadPeriod: o.loadPeriod, MetaCaps: spec.metaCaps, Seed: int64(o.seed), Endpoints: emb.Endpoints(),
				Registry: client, Logger: logger,
			}, d, o)
			results[i], errs[i] = res, err
			if err != nil {
				errs[i] = fmt.Errorf("%s %s/%s: %w", spec.scenario, spec.topology, spec.policy, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			fmt.Printf("  %-19s %-6s %-16s ok %5d  ttft p50 %6.0f p99 %6.0f ms  e2e p99 %6.0f ms  hit %.2f  (%.0fs)\n",
				res.Scenario, res.Topology, res.label(), res.OK, res.TTFT.P50, res.TTFT.P99, res.E2E.P99, res.HitRate, res.WallSeconds)
		})
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return err
	}
	env.LoadAvgEnd = loadAvg()
	env.WallSeconds = time.Since(began).Seconds()
	rep := report{Env: env, Results: results}
	fmt.Println()
	fmt.Print(rep.table())
	fmt.Print(rep.goalsText())
	return rep.write(o.out)
}

// buildPlan lists the runs: the no-sidecar baseline, every policy with one
// sidecar and with a fleet, then the priority experiment.
func buildPlan(o options, wc workloadConfig, capRPS float64) []runSpec {
	mw := wc
	mw.Rate, mw.Duration, mw.Sidecars = o.load*capRPS, o.warmup+o.duration, o.fleet
	main := generate(mw)
	var plan []runSpec
	if o.direct {
		plan = append(plan, runSpec{scenario: "main", topology: "direct", policy: "client-rr", w: main})
	}
	for _, topo := range split(o.topologies) {
		n := 1
		if topo == "fleet" {
			n = o.fleet
		}
		for _, p := range split(o.policies) {
			plan = append(plan, runSpec{scenario: "main", topology: topo, policy: p, sidecars: n, w: main})
		}
		for _, p := range split(o.capsPolicies) {
			plan = append(plan, runSpec{scenario: "main", topology: topo, policy: p, sidecars: n, w: main, metaCaps: true})
		}
	}
	if o.priority {
		pw := wc
		pw.Duration, pw.Sidecars = o.warmup+o.duration, 1
		unloaded := floodWorkload(pw, o.highLoad*capRPS, 0)
		flood := floodWorkload(pw, o.highLoad*capRPS, o.floodLoad*capRPS)
		plan = append(plan,
			runSpec{scenario: "priority-unloaded", topology: "single", policy: "auto", sidecars: 1, w: unloaded},
			runSpec{scenario: "priority-flood", topology: "single", policy: "auto", sidecars: 1, w: flood},
			runSpec{scenario: "priority-flood", topology: "single", policy: "auto", sidecars: 1, w: flood, metaCaps: true},
		)
	}
	return plan
}

// execute runs one spec on a fresh cluster: new engines (cold caches), new
// sidecars, the same planned requests.
func execute(ctx context.Context, spec runSpec, cc clusterConfig, d *driver, o options) (result, error) {
	began := time.Now()
	if spec.topology == "direct" {
		cc.Policy = ""
	}
	cl, err := startCluster(ctx, cc)
	if err != nil {
		return result{}, err
	}
	defer cl.close()
	var to target
	switch spec.topology {
	case "direct":
		urls := cl.directURLs()
		next := map[string]*atomic.Uint64{modelA: {}, modelB: {}}
		to = func(r *request) string {
			u := urls[r.Model]
			return u[(next[r.Model].Add(1)-1)%uint64(len(u))]
		}
	default:
		to = func(r *request) string { return cl.urls[r.Sidecar%len(cl.urls)] }
	}
	var before map[string]llmsim.Stats
	if o.trace > 0 {
		defer cl.trace(os.Stdout, spec.scenario+" "+spec.topology+"/"+spec.policy, o.trace)()
	}
	outs := d.run(ctx, spec.w, to, o.warmup, func() { before = cl.stats() })
	after := cl.stats()
	res := result{Scenario: spec.scenario, Topology: spec.topology, Policy: spec.policy, Sidecars: spec.sidecars,
		Caps: spec.metaCaps, OfferedRPS: float64(len(spec.w.Requests)) / spec.w.Config.Duration.Seconds()}
	summarize(&res, outs, o.warmup, o.duration, before, after)
	res.WallSeconds = time.Since(began).Seconds()
	return res, nil
}

// loadAvg reads the 1, 5 and 15 minute load averages, to show how busy the
// machine was; empty where /proc is absent.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func (o options) describe() map[string]string {
	return map[string]string{
		"duration": o.duration.String(), "warmup": o.warmup.String(), "drain": o.drain.String(),
		"load_period": o.loadPeriod.String(), "seed": fmt.Sprint(o.seed), "load": fmt.Sprint(o.load),
		"high_load": fmt.Sprint(o.highLoad), "flood_load": fmt.Sprint(o.floodLoad), "fleet": fmt.Sprint(o.fleet),
		"parallel": fmt.Sprint(o.parallel), "policies": o.policies, "topologies": o.topologies, "caps_policies": o.capsPolicies,
	}
}
