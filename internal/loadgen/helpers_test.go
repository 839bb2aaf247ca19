package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blitzscale/router/internal/llmsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startSim serves a simulated engine for the test's duration and returns
// its base URL. The handler counts requests in flight, so that tests can
// check the load the generator really applied.
func startSim(t *testing.T, cfg llmsim.Config) (*llmsim.Sim, string, *inflight) {
	t.Helper()
	if len(cfg.Models) == 0 {
		cfg.Models = []string{"m"}
	}
	cfg.DisablePrefixCache = true // constant TTFT whatever the prompt
	if cfg.MaxConcurrency == 0 {
		cfg.MaxConcurrency = 1024
	}
	sim, err := llmsim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &inflight{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.enter()
		defer in.now.Add(-1)
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return sim, srv.URL + "/v1", in
}

// inflight counts requests being served and keeps the peak.
type inflight struct{ now, peak atomic.Int64 }

func (c *inflight) enter() {
	n := c.now.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
}

// run runs cfg and fails the test on a config error or a run that outlives
// its duration by far; it checks the books balance.
func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Warmup+cfg.Duration+30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var errs int64
	for _, n := range res.Errors {
		errs += n
	}
	if res.Sent != res.Completed+res.Failed+res.Incomplete || errs != res.Failed {
		t.Errorf("books do not balance: sent %d != ok %d + failed %d + incomplete %d, or errors %v", res.Sent, res.Completed, res.Failed, res.Incomplete, res.Errors)
	}
	return res
}

// within reports whether got lies in [lo, hi], in microseconds.
func within(got float64, lo, hi time.Duration) bool {
	return got >= float64(lo.Microseconds()) && got <= float64(hi.Microseconds())
}
