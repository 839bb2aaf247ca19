package sidecar

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

func TestParseEngineMetrics(t *testing.T) {
	tests := []struct {
		name, engine, text string
		waiting, running   int64
		kv                 float64
		wantErr            bool
	}{
		{"vllm", "vllm", `# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3
vllm:num_requests_waiting{model_name="b"} 1
vllm:num_requests_running{model_name="a"} 8
vllm:kv_cache_usage_perc{model_name="a"} 0.5
`, 4, 8, 0.5, false},
		{"old vllm kv name", "", "vllm:num_requests_running 2\nvllm:gpu_cache_usage_perc 0.25\n", 0, 2, 0.25, false},
		{"sglang", "sglang", "sglang:num_queue_reqs 5\nsglang:num_running_reqs 7\nsglang:token_usage 0.9\n", 5, 7, 0.9, false},
		{"sglang names on a vllm instance", "", "sglang:num_queue_reqs 5\n", 0, 0, 0, true},
		{"garbage", "", "vllm:num_requests_waiting{ 3\n", 0, 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := parseEngineMetrics(strings.NewReader(tc.text), tc.engine)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (st.Waiting != tc.waiting || st.Running != tc.running || st.KVCacheUsage != tc.kv) {
				t.Errorf("got %+v, want waiting %d running %d kv %v", st, tc.waiting, tc.running, tc.kv)
			}
		})
	}
}

// TestScrapeReadsTheSimulatorsQueue routes one request so the instance
// counts as used, then expects the running sidecar to read the engine's
// /metrics into the routing counters.
func TestScrapeReadsTheSimulatorsQueue(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	sc := newSidecar(t, Config{Scrape: ScrapeConfig{Interval: 10 * time.Millisecond}}, instance("e", srv, "m"))
	if resp, body := sc.post(t, "/v1/completions", `{"model":"m","max_tokens":1,"prompt":"x"}`); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sc.s.scrapeEngines(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	ep := sc.s.Router().Table().Endpoints()[0]
	waitFor(t, "a scrape", func() bool { _, ok := ep.Load.Engine(); return ok })
}
