package sidecar

import (
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

// TestSlowInstanceGetsLessUnderLoadAwarePolicies: with a fast and a slow
// engine under concurrent load, round-robin splits evenly while least-load,
// p2c and auto send the slow engine a smaller share (its requests stay in
// flight longer, so it looks busier).
func TestSlowInstanceGetsLessUnderLoadAwarePolicies(t *testing.T) {
	_, fast := startSim(t, llmsim.Config{ID: "fast", Models: []string{"m"}, TTFT: 2 * time.Millisecond, ITL: time.Millisecond})
	_, slow := startSim(t, llmsim.Config{ID: "slow", Models: []string{"m"}, TTFT: 60 * time.Millisecond, ITL: 5 * time.Millisecond})
	share := func(policy string) float64 {
		sc := newSidecar(t, Config{Policy: policy}, instance("fast", fast, "m"), instance("slow", slow, "m"))
		var mu sync.Mutex
		counts := map[string]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 12 {
					// No affinity key: every prompt is different.
					resp, _ := sc.post(t, "/v1/completions", `{"model":"m","max_tokens":2,"prompt":"`+time.Now().String()+`"}`,
						"X-Blitz-Session", "")
					mu.Lock()
					counts[resp.Header.Get("X-Blitz-Instance")]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return float64(counts["slow"]) / float64(counts["slow"]+counts["fast"])
	}
	rr := share("round-robin")
	if rr < 0.4 || rr > 0.6 {
		t.Errorf("round-robin sent the slow engine %.0f%%, want about half", 100*rr)
	}
	for _, policy := range []string{"least-load", "p2c"} {
		if got := share(policy); got >= rr-0.1 {
			t.Errorf("%s sent the slow engine %.0f%% (round-robin %.0f%%): want clearly less", policy, 100*got, 100*rr)
		}
	}
}
