package llmsim

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestConcurrencyCapAndQueue(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxConcurrency = 2
	cfg.MaxQueue = 2
	cfg.TTFT = time.Hour // requests hold their slots until cancelled
	s, srv := startSim(t, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	var bodies []io.ReadCloser
	for range 4 {
		resp := open(t, ctx, srv, http.MethodPost, "/v1/completions", `{"model":"m1","stream":true,"prompt":"x"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		bodies = append(bodies, resp.Body)
	}
	// Each request returned once admitted (headers come on admission), so
	// the state is already settled: two run and two wait.
	if st := s.Stats(); st.Running != 2 || st.Waiting != 2 {
		t.Errorf("running %d, waiting %d; want 2 and 2", st.Running, st.Waiting)
	}
	families := scrape(t, metricsText(t, srv))
	for name, want := range map[string]float64{
		"vllm:num_requests_running": 2,
		"vllm:num_requests_waiting": 2,
		"vllm:kv_cache_usage_perc":  1,
	} {
		if got := gaugeValue(t, families, name); got != want {
			t.Errorf("%s = %v; want %v", name, got, want)
		}
	}

	// A fifth request finds the queue full.
	resp, b := do(t, srv, http.MethodPost, "/v1/completions", `{"model":"m1","prompt":"x"}`)
	var e errorBody
	decodeJSON(t, b, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || deref(e.Error.Code) != "queue_full" {
		t.Errorf("status %d, body %s; want 503 queue_full", resp.StatusCode, b)
	}

	cancel()
	for _, b := range bodies {
		_, _ = io.Copy(io.Discard, b)
		b.Close()
	}
	waitFor(t, "all four to be cancelled", func() bool {
		st := s.Stats()
		return st.Cancelled == 4 && st.Running == 0 && st.Waiting == 0
	})
	if st := s.Stats(); st.Requests != 5 || st.Errors != 1 || st.Completed != 0 {
		t.Errorf("stats %+v; want 5 requests, 1 error, 4 cancelled", st)
	}
}

func TestSchedulerIsFIFO(t *testing.T) {
	s := newScheduler(1, 0)
	first, err := s.enqueue()
	if err != nil {
		t.Fatal(err)
	}
	var waiters []*ticket
	for range 3 {
		w, err := s.enqueue()
		if err != nil {
			t.Fatal(err)
		}
		waiters = append(waiters, w)
	}
	// A waiter that leaves gives up its place, not a slot.
	waiters[1].release()
	ready := func(tk *ticket) bool {
		select {
		case <-tk.ready:
			return true
		default:
			return false
		}
	}
	first.release()
	first.release() // idempotent
	if !ready(waiters[0]) || ready(waiters[2]) {
		t.Fatal("slot did not go to the oldest waiter")
	}
	waiters[0].release()
	if !ready(waiters[2]) {
		t.Fatal("slot did not go to the next waiter")
	}
	if r, w := s.nRunning.Load(), s.nWaiting.Load(); r != 1 || w != 0 {
		t.Errorf("running %d waiting %d; want 1 and 0", r, w)
	}
	waiters[2].release()
	var tk *ticket
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk, _ = s.enqueue()
	tk2, _ := s.enqueue()
	if err := tk2.wait(ctx); err == nil {
		t.Error("waiter with a done context: wait = nil; want the context error")
	}
	tk2.release()
	tk.release()
	if r, w := s.nRunning.Load(), s.nWaiting.Load(); r != 0 || w != 0 {
		t.Errorf("running %d waiting %d after all left; want 0 and 0", r, w)
	}
}

func TestPrefixCache(t *testing.T) {
	block := strings.Repeat("a", 16)
	other := strings.Repeat("b", 16)
	tests := []struct {
		name    string
		disable bool
		prompts []string
		hits    []string // X-Sim-Prefix-Hit-Blocks per request
		queries int64    // tokens
		hitToks int64    // tokens
	}{
		{
			name:    "repeat and shared prefix",
			prompts: []string{block + other + block + other, block + other + block + other, block + other + other, "tail<16"},
			hits:    []string{"0", "4", "2", "0"},
			queries: 16 + 16 + 12 + 1, hitToks: (4 + 2) * 16 / 4,
		},
		{
			name:    "partial block never hits",
			prompts: []string{block + "xyz", block + "xyz"},
			hits:    []string{"0", "1"},
			queries: 4 + 4, hitToks: 4,
		},
		{
			name:    "disabled",
			disable: true,
			prompts: []string{block + block, block + block},
			hits:    []string{"0", "0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.BlockSize = 16
			cfg.DisablePrefixCache = tt.disable
			s, srv := startSim(t, cfg)
			var got []string
			for _, p := range tt.prompts {
				resp, b := do(t, srv, http.MethodPost, "/v1/completions", mustJSON(map[string]any{"model": "m1", "prompt": p, "max_tokens": 1}))
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				got = append(got, resp.Header.Get(HeaderPrefixHitBlocks))
			}
			if diff := cmp.Diff(tt.hits, got); diff != "" {
				t.Errorf("hit blocks per request (-want +got):\n%s", diff)
			}
			st := s.Stats()
			if st.PrefixQueries != tt.queries || st.PrefixHits != tt.hitToks {
				t.Errorf("prefix queries %d hits %d; want %d and %d", st.PrefixQueries, st.PrefixHits, tt.queries, tt.hitToks)
			}
			families := scrape(t, metricsText(t, srv))
			if q, h := counterValue(t, families, "vllm:prefix_cache_queries_total"), counterValue(t, families, "vllm:prefix_cache_hits_total"); q != float64(tt.queries) || h != float64(tt.hitToks) {
				t.Errorf("metrics queries %v hits %v; want %d and %d", q, h, tt.queries, tt.hitToks)
			}
		})
	}
}

func TestPrefixCacheLRU(t *testing.T) {
	c := newPrefixCache(3)
	a := blockHashes("m", strings.Repeat("a", 8)+strings.Repeat("b", 8), 8) // 2 blocks
	if h := c.match(a); h != 0 {
		t.Fatalf("cold match = %d; want 0", h)
	}
	x := blockHashes("m", strings.Repeat("x", 16), 8) // 2 blocks; evicts a's tail
	c.match(x)
	if c.len() != 3 {
		t.Fatalf("len = %d; want capacity 3", c.len())
	}
	if h := c.match(a[:1]); h != 1 {
		t.Errorf("a's first block: %d hits; want 1 (tails are evicted first)", h)
	}
	if h := c.match(blockHashes("other-model", strings.Repeat("x", 16), 8)); h != 0 {
		t.Errorf("another model's blocks hit %d; want 0", h)
	}
	if got := blockHashes("m", "short", 8); got != nil {
		t.Errorf("hashes of a partial block = %v; want none", got)
	}
}

func TestEffectiveTTFT(t *testing.T) {
	const ttft = time.Second
	tests := []struct {
		hit, total int
		want       time.Duration
	}{
		{0, 4, ttft},
		{1, 4, 750 * time.Millisecond},
		{4, 4, 100 * time.Millisecond}, // floor: a full hit is not free
		{3, 3, 100 * time.Millisecond},
		{0, 0, ttft},
	}
	for _, tt := range tests {
		if got := effectiveTTFT(ttft, tt.hit, tt.total); got != tt.want {
			t.Errorf("effectiveTTFT(%d/%d) = %v; want %v", tt.hit, tt.total, got, tt.want)
		}
	}
}

func TestMetricsFamilies(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	do(t, srv, http.MethodPost, "/v1/completions", `{"model":"m1","prompt":"hello","max_tokens":2}`)
	families := scrape(t, metricsText(t, srv))
	want := map[string]string{
		"vllm:num_requests_running":       "GAUGE",
		"vllm:num_requests_waiting":       "GAUGE",
		"vllm:kv_cache_usage_perc":        "GAUGE",
		"vllm:prefix_cache_queries_total": "COUNTER",
		"vllm:prefix_cache_hits_total":    "COUNTER",
		"vllm:prompt_tokens_total":        "COUNTER",
		"vllm:generation_tokens_total":    "COUNTER",
	}
	got := map[string]string{}
	for name, f := range families {
		got[name] = f.GetType().String()
		for _, m := range f.GetMetric() {
			if l := m.GetLabel(); len(l) != 1 || l[0].GetName() != "model_name" || l[0].GetValue() != "m1" {
				t.Errorf("%s labels %v; want model_name=m1 only", name, l)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("families (-want +got):\n%s", diff)
	}
	if v := counterValue(t, families, "vllm:generation_tokens_total"); v != 2 {
		t.Errorf("generation tokens %v; want 2", v)
	}
}

func scrape(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, text)
	}
	return families
}

func gaugeValue(t *testing.T, families map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok || len(f.GetMetric()) != 1 {
		t.Fatalf("no single series %s", name)
	}
	return f.GetMetric()[0].GetGauge().GetValue()
}

func counterValue(t *testing.T, families map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f, ok := families[name]
	if !ok || len(f.GetMetric()) != 1 {
		t.Fatalf("no single series %s", name)
	}
	return f.GetMetric()[0].GetCounter().GetValue()
}
