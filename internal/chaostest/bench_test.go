package chaostest_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/sidecar"
)

// The failover benchmarks of issue 5 measure, with the sidecar's default
// breaker (5 consecutive failures, 5s cool-down, 1s probe interval), what a
// client sees when one of three engines dies or hangs, and how long a
// recovered engine takes to get traffic again. They take about 20 s and
// assert nothing beyond zero client errors, so they run only when asked:
//
//	BLITZ_CHAOS_BENCH=1 go test -run FailoverBench -v ./internal/chaostest/
//
// Run them without -race for realistic numbers.
func TestFailoverBench(t *testing.T) {
	if os.Getenv("BLITZ_CHAOS_BENCH") == "" {
		t.Skip("set BLITZ_CHAOS_BENCH=1 to measure failover cost")
	}
	const (
		window    = 3 * time.Second // load per scenario
		faultAt   = time.Second     // into the window
		firstByte = time.Second     // FirstByteTimeout of the hung scenario
	)
	engineCfg := llmsim.Config{TTFT: 20 * time.Millisecond, ITL: 2 * time.Millisecond}
	benchSetup := func(fb time.Duration) setup {
		return setup{
			engines: [3]llmsim.Config{engineCfg, engineCfg, engineCfg},
			sidecar: func(c *sidecar.Config) {
				c.Breaker = breaker.Config{} // the defaults
				if fb > 0 {
					c.FirstByteTimeout = fb
				}
			},
		}
	}
	var report []string
	line := func(format string, args ...any) {
		report = append(report, fmt.Sprintf(format, args...))
	}

	scenario := func(name string, fb time.Duration, fault func(*engine)) {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			rs, engines := threeEngines(t, benchSetup(fb))
			start := time.Now()
			l := startLoad(rs, workers)
			var faultTime time.Time
			if fault != nil {
				eventually(t, "fault time", func() bool { return time.Since(start) >= faultAt })
				faultTime = time.Now()
				fault(engines[1])
			}
			eventually(t, "window", func() bool { return time.Since(start) >= window })
			outs := l.stop()
			if bad := failures(outs); len(bad) > 0 {
				t.Errorf("%d client errors, first %v", len(bad), bad[0])
			}
			var retried, afterFault []time.Duration
			for _, o := range outs {
				if o.route == "retry" {
					retried = append(retried, o.latency)
				}
				if !faultTime.IsZero() && o.at.After(faultTime) {
					afterFault = append(afterFault, o.latency)
				}
			}
			all := latencies(outs)
			line("%-22s %5d req  all p50 %7v p99 %7v | after fault p50 %7v p99 %7v | %3d retried p50 %7v p99 %7v | errors %d",
				name, len(outs), ms(percentile(all, 50)), ms(percentile(all, 99)),
				ms(percentile(afterFault, 50)), ms(percentile(afterFault, 99)),
				len(retried), ms(percentile(retried, 50)), ms(percentile(retried, 99)), len(failures(outs)))
			rs.assertIdle(t)
		})
	}
	scenario("baseline", 0, nil)
	scenario("killed (refused)", 0, (*engine).kill)
	scenario(fmt.Sprintf("hung (first byte %v)", firstByte), firstByte, func(e *engine) { e.sim.SetFaults(llmsim.Faults{Hang: true}) })

	// Recovery: the engine dies, its breaker opens, and it comes back on
	// the same address at once (the worst case: a whole cool-down to wait).
	recovery := func(name string, breakerCfg breaker.Config) {
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			su := benchSetup(0)
			su.sidecar = func(c *sidecar.Config) { c.Breaker = breakerCfg }
			rs, engines := threeEngines(t, su)
			victim := engines[1]
			l := startLoad(rs, workers)
			eventually(t, "victim serving", func() bool {
				return l.count(func(o outcome) bool { return o.ok() && o.instance == victim.id }) > 10
			})
			victim.kill()
			eventually(t, "breaker open", func() bool { return rs.breakerOf(t, victim.id) == "open" })
			openedAt := time.Now()
			if err := victim.start(); err != nil {
				t.Fatalf("restart: %v", err)
			}
			restartedAt := time.Now()
			eventuallyWithin(t, 2*waitFor, "victim serves again", func() bool {
				return l.count(func(o outcome) bool { return o.ok() && o.instance == victim.id && o.at.After(restartedAt) }) > 0
			})
			back := time.Now()
			outs := l.stop()
			if bad := failures(outs); len(bad) > 0 {
				t.Errorf("%d client errors, first %v", len(bad), bad[0])
			}
			cfg := rs.s.Config().Breaker
			line("%-22s restarted engine took traffic %v after its restart (%v after its breaker opened); cool-down %v + probe interval %v",
				name, ms(back.Sub(restartedAt)), ms(back.Sub(openedAt)), orDefault(cfg.CoolDown, breaker.DefaultCoolDown), orDefault(cfg.ProbeInterval, breaker.DefaultProbeInterval))
			rs.assertIdle(t)
		})
	}
	recovery("recovery (defaults)", breaker.Config{})
	recovery("recovery (1s/100ms)", breaker.Config{CoolDown: time.Second, ProbeInterval: 100 * time.Millisecond})

	t.Logf("failover cost, %d closed-loop clients, engines TTFT %v ITL %v, 4 tokens:\n%s",
		workers, engineCfg.TTFT, engineCfg.ITL, strings.Join(report, "\n"))
}

func ms(d time.Duration) time.Duration {
	if d > 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
