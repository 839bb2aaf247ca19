package sidecar

import (
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/routing"
)

func TestParseUsage(t *testing.T) {
	tests := []struct {
		name             string
		in               string
		prompt, complete int64
		ok               bool
	}{
		{"response", `{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`, 12, 34, true},
		{"stream event", "data: {\"choices\":[],\"usage\":{\"prompt_tokens\": 7, \"completion_tokens\": 3}}\n\n", 7, 3, true},
		{"usage null", `data: {"choices":[{"delta":{}}],"usage":null}`, 0, 0, false},
		{"no usage", `{"data":[1,2]}`, 0, 0, false},
		{"last wins", `"usage":{"prompt_tokens":1,"completion_tokens":1} "usage":{"prompt_tokens":5,"completion_tokens":6}`, 5, 6, true},
		{"embeddings", `{"usage":{"prompt_tokens":9,"total_tokens":9}}`, 9, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, c, ok := parseUsage([]byte(tc.in))
			if p != tc.prompt || c != tc.complete || ok != tc.ok {
				t.Errorf("parseUsage = %d, %d, %v; want %d, %d, %v", p, c, ok, tc.prompt, tc.complete, tc.ok)
			}
		})
	}
}

// TestTokenAndITLMetrics streams through the real simulator with usage on
// and checks the token counters and inter-token histogram the sidecar fills
// as the stream passes.
func TestTokenAndITLMetrics(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}, TTFT: time.Millisecond, ITL: 2 * time.Millisecond})
	sc := newSidecar(t, Config{}, instance("e", srv, "m"))
	resp, body := sc.post(t, "/v1/chat/completions",
		`{"model":"m","stream":true,"max_tokens":5,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"usage"`) {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	resp, body = sc.post(t, "/v1/completions", `{"model":"m","max_tokens":4,"prompt":"abcd"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("completion: %d %s", resp.StatusCode, body)
	}
	_, metrics := sc.get(t, "/metrics")
	for _, want := range []string{
		`blitz_tokens_total{model="m",type="completion"} 9`,
		`blitz_inter_token_latency_seconds_count{model="m"}`,
		`blitz_time_to_first_token_seconds_count{model="m"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestEveryDesignFamilyIsExported drives a stream with usage, a retry and a
// shed request, then checks /metrics for each family of DESIGN.md's minimum
// set.
func TestEveryDesignFamilyIsExported(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	sc := newSidecar(t, Config{Policy: "round-robin", Admission: routing.AdmissionConfig{Low: routing.RateLimit{Rate: 0.001, Burst: 1}}},
		discovery.Instance{ID: "a-dead", Address: deadAddr(t), Models: []string{"m"}}, instance("e", srv, "m"))
	sc.post(t, "/v1/chat/completions", `{"model":"m","stream":true,"max_tokens":3,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	sc.post(t, "/v1/completions", `{"model":"m","max_tokens":1,"prompt":"x"}`)
	sc.post(t, "/v1/completions", `{"model":"m","max_tokens":1,"prompt":"x"}`, "X-Blitz-Priority", "low")
	sc.post(t, "/v1/completions", `{"model":"m","max_tokens":1,"prompt":"x"}`, "X-Blitz-Priority", "low")
	_, body := sc.get(t, "/metrics")
	for _, family := range []string{
		"blitz_requests_total", "blitz_request_duration_seconds", "blitz_time_to_first_token_seconds",
		"blitz_inter_token_latency_seconds", "blitz_tokens_total", "blitz_inflight_requests", "blitz_queue_depth",
		"blitz_shed_total", "blitz_retries_total", "blitz_breaker_state", "blitz_instances",
		"blitz_discovery_last_sync_timestamp_seconds", "blitz_load_publish_total", "blitz_overhead_seconds",
	} {
		if !strings.Contains(string(body), "# TYPE "+family+" ") {
			t.Errorf("/metrics lacks the family %s", family)
		}
	}
}
