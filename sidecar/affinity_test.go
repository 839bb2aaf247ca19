package sidecar

import (
	"fmt"
	"strings"
	"testing"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
)

// TestAffinityAgreesAcrossSidecars: two independent sidecars with the same
// registry view send the same session, the same prompt_cache_key and the
// same prompt prefix to the same instance, with no coordination.
func TestAffinityAgreesAcrossSidecars(t *testing.T) {
	var ins []discovery.Instance
	for i := range 4 {
		_, srv := startSim(t, llmsim.Config{ID: fmt.Sprint("e", i), Models: []string{"m"}, TTFT: 1, ITL: 1})
		ins = append(ins, instance(fmt.Sprint("e", i), srv, "m"))
	}
	a := newSidecar(t, Config{SidecarID: "a"}, ins...)
	b := newSidecar(t, Config{SidecarID: "b"}, ins...)
	prefix := strings.Repeat("You are a careful assistant for ACME. ", 10)
	tests := []struct {
		name   string
		body   string
		header []string
		route  string
	}{
		{"session header", `{"model":"m","max_tokens":1,"prompt":"%d"}`, []string{"X-Blitz-Session", "user-42"}, "affinity"},
		{"prompt_cache_key", `{"model":"m","max_tokens":1,"prompt":"%d","prompt_cache_key":"doc-7"}`, nil, "affinity"},
		{"user", `{"model":"m","max_tokens":1,"prompt":"%d","user":"u-9"}`, nil, "affinity"},
		{"shared prefix", `{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"` + prefix + `"},{"role":"user","content":"q%d"}]}`, nil, "affinity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			served := map[string]bool{}
			for i := range 6 {
				for _, sc := range []*sidecar{a, b} {
					path := "/v1/completions"
					if strings.Contains(tc.body, "messages") {
						path = "/v1/chat/completions"
					}
					resp, body := sc.post(t, path, fmt.Sprintf(tc.body, i), tc.header...)
					if resp.StatusCode != 200 {
						t.Fatalf("%d %s", resp.StatusCode, body)
					}
					if got := resp.Header.Get("X-Blitz-Route"); got != tc.route {
						t.Errorf("route %q, want %q", got, tc.route)
					}
					served[resp.Header.Get("X-Blitz-Instance")] = true
				}
			}
			if len(served) != 1 {
				t.Errorf("one key went to %d instances across two sidecars: %v", len(served), served)
			}
		})
	}
}
