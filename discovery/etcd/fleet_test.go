package etcd

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFleetCost measures what N sidecars publishing load records cost one
// etcd: N publishers each write once per period (every write changes the
// record, the worst case: nothing is skipped) and N watchers each receive
// every write. It prints numbers for docs/fleet-budget.md and asserts
// nothing.
//
// The watchers are this package's prefixWatcher without the load view:
// on one 2-core machine, N full LoadSources would measure N sidecars' JSON
// decoding on shared CPU rather than etcd's fan-out (BenchmarkLoadViewApply
// gives that per-sidecar cost separately).
//
//	BLITZ_FLEET_BENCH=1 go test -run TestFleetCost -v ./discovery/etcd/
//
// BLITZ_FLEET_PERIOD (default 2s) and BLITZ_FLEET_DURATION (default 10s)
// tune the run; BLITZ_FLEET_N overrides the fleet sizes (e.g. "1000").
func TestFleetCost(t *testing.T) {
	if os.Getenv("BLITZ_FLEET_BENCH") != "1" {
		t.Skip("measurement, not a test: set BLITZ_FLEET_BENCH=1 to run it (about a minute)")
	}
	period := envDuration(t, "BLITZ_FLEET_PERIOD", 2*time.Second)
	dur := envDuration(t, "BLITZ_FLEET_DURATION", 10*time.Second)
	sizes := []int{10, 100, 500}
	if s := os.Getenv("BLITZ_FLEET_N"); s != "" {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil {
			t.Fatalf("BLITZ_FLEET_N=%q: %v", s, err)
		}
		sizes = []int{n}
	}
	t.Logf("record size %d bytes (8 instances); period %v; measured over %v", len(sampleRecord("side-0000", 1)), period, dur)
	for _, n := range sizes {
		t.Run(fmt.Sprintf("N=%d", n), func(t *testing.T) { measureFleet(t, n, period, dur) })
	}
}

func measureFleet(t *testing.T, n int, period, dur time.Duration) {
	srv := startServer(t, "", "")
	// A few shared connections: a fleet has one per sidecar, but in one
	// process they would only add scheduler noise.
	clients := make([]*clientv3.Client, min(n, 8))
	for i := range clients {
		clients[i] = newClient(t, srv.Endpoints())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	stats := &watchStats{}
	var synced sync.WaitGroup
	for i := range n {
		c := clients[i%len(clients)]
		w := Config{Client: c, Logger: quietLogger()}.withDefaults().watcher(loadPrefix, stats)
		ch := make(chan batch, 1)
		synced.Add(1)
		wg.Add(2)
		go func() { defer wg.Done(); w.run(ctx, ch) }()
		go func() {
			defer wg.Done()
			first := true
			for range ch {
				if first {
					synced.Done()
					first = false
				}
			}
		}()
	}
	synced.Wait()

	var writes, failures atomic.Int64
	lat := make([][]time.Duration, n)
	var measuring atomic.Bool
	for i := range n {
		id := fmt.Sprintf("side-%04d", i)
		p, err := NewPublisher(PublisherConfig{Config: Config{Client: clients[i%len(clients)], Logger: quietLogger()}, SidecarID: id})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = p.Close(context.Background()) }()
			// Spread the fleet over the period, as jitter would.
			if !discovery.Sleep(ctx, period*time.Duration(i)/time.Duration(n)) {
				return
			}
			tick := time.NewTicker(period)
			defer tick.Stop()
			for seq := uint64(1); ; seq++ {
				r, _ := discovery.DecodeLoadReport(id, []byte(sampleRecord(id, seq)))
				t0 := time.Now()
				if err := p.Publish(ctx, r); err != nil {
					if ctx.Err() != nil {
						return
					}
					failures.Add(1)
				} else if measuring.Load() {
					writes.Add(1)
					lat[i] = append(lat[i], time.Since(t0))
				}
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}

	discovery.Sleep(ctx, period) // warm-up: every publisher has granted its lease
	events0, cpu0, start := stats.events.Load(), cpuTime(), time.Now()
	measuring.Store(true)
	discovery.Sleep(ctx, dur)
	measuring.Store(false)
	elapsed := time.Since(start).Seconds()
	events, cpu := stats.events.Load()-events0, cpuTime()-cpu0

	var all []time.Duration
	for i := range lat {
		all = append(all, lat[i]...)
	}
	recordBytes := len(sampleRecord("side-0000", 1)) + len(loadPrefix+"side-0000")
	w := float64(writes.Load()) / elapsed
	t.Logf("N=%d: writes %.1f/s (expected %.1f/s), %.0f KB/s written; watch events delivered %.0f/s (expected %.0f/s = writes × N), %.1f MB/s; publish latency p50 %.1f ms p99 %.1f ms; failures %d; process CPU %.2f cores",
		n, w, float64(n)/period.Seconds(), w*float64(recordBytes)/1024,
		float64(events)/elapsed, w*float64(n), float64(events)/elapsed*float64(recordBytes)/(1<<20),
		percentileMs(all, 50), percentileMs(all, 99), failures.Load(), cpu.Seconds()/elapsed)
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, s, err)
	}
	return d
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
