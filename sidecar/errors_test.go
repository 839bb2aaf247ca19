package sidecar

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/routing"
)

// TestErrorTable covers every row of DESIGN.md's error table, plus the
// neighbouring cases that share a row.
func TestErrorTable(t *testing.T) {
	const chat = `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`
	echo := func(t *testing.T) discovery.Instance {
		return instance("echo", startBackend(t, &recorder{}), "m1")
	}
	tests := []struct {
		name       string
		setup      func(t *testing.T) *sidecar
		body       string
		chunked    bool
		header     []string
		status     int
		typ, code  string
		param      string // "" means null
		retryAfter bool
	}{
		{name: "body not JSON", body: `model=m1`, status: 400, typ: "invalid_request_error", code: "invalid_request_error"},
		{name: "empty body", body: ``, status: 400, typ: "invalid_request_error", code: "invalid_request_error"},
		{name: "JSON array", body: `[{"model":"m1"}]`, status: 400, typ: "invalid_request_error", code: "invalid_request_error"},
		{name: "truncated object", body: `{"model":"m1"`, status: 400, typ: "invalid_request_error", code: "invalid_request_error"},
		{name: "no model", body: `{"messages":[]}`, status: 400, typ: "invalid_request_error", code: "invalid_request_error", param: "model"},
		{name: "model not a string", body: `{"model":["m1"]}`, status: 400, typ: "invalid_request_error", code: "invalid_request_error", param: "model"},
		{name: "empty model", body: `{"model":""}`, status: 400, typ: "invalid_request_error", code: "invalid_request_error", param: "model"},
		{name: "bad priority", body: chat, header: []string{"X-Blitz-Priority", "urgent"}, status: 400, typ: "invalid_request_error", code: "invalid_request_error", param: "X-Blitz-Priority"},
		{
			name:   "body over the limit with Content-Length",
			setup:  func(t *testing.T) *sidecar { return newSidecar(t, Config{MaxBodyBytes: 64}, echo(t)) },
			body:   `{"model":"m1","prompt":"` + strings.Repeat("x", 100) + `"}`,
			status: 413, typ: "invalid_request_error", code: "request_too_large",
		},
		{
			name:  "chunked body over the limit",
			setup: func(t *testing.T) *sidecar { return newSidecar(t, Config{MaxBodyBytes: 64}, echo(t)) },
			body:  `{"model":"m1","prompt":"` + strings.Repeat("x", 4000) + `"}`, chunked: true,
			status: 413, typ: "invalid_request_error", code: "request_too_large",
		},
		{name: "unknown model", body: `{"model":"gpt-17"}`, status: 404, typ: "invalid_request_error", code: "model_not_found", param: "model"},
		{
			name: "shed by admission",
			setup: func(t *testing.T) *sidecar {
				sc := newSidecar(t, Config{Admission: routing.AdmissionConfig{Normal: routing.RateLimit{Rate: 0.001, Burst: 1}}}, echo(t))
				if resp, body := sc.post(t, "/v1/chat/completions", chat); resp.StatusCode != 200 {
					t.Fatalf("first request within the burst: status %d: %s", resp.StatusCode, body)
				}
				return sc
			},
			body: chat, status: 429, typ: "rate_limit_error", code: "rate_limit_exceeded", retryAfter: true,
		},
		{
			name: "every instance draining",
			setup: func(t *testing.T) *sidecar {
				a := instance("a", startBackend(t, &recorder{}), "m1")
				b := instance("b", startBackend(t, &recorder{}), "m1")
				a.Draining, b.Draining = true, true
				return newSidecar(t, Config{}, a, b)
			},
			body: chat, status: 503, typ: "server_error", code: "no_healthy_upstream", retryAfter: true,
		},
		{
			name:   "before the first discovery sync",
			setup:  func(t *testing.T) *sidecar { return newSidecar(t, Config{}) },
			body:   chat,
			status: 503, typ: "server_error", code: "no_healthy_upstream", retryAfter: true,
		},
		{
			name: "every instance refuses connections",
			setup: func(t *testing.T) *sidecar {
				return newSidecar(t, Config{},
					discovery.Instance{ID: "dead-1", Address: deadAddr(t), Models: []string{"m1"}},
					discovery.Instance{ID: "dead-2", Address: deadAddr(t), Models: []string{"m1"}})
			},
			body: chat, status: 502, typ: "server_error", code: "upstream_error",
		},
		{
			name: "instance never answers",
			setup: func(t *testing.T) *sidecar {
				sim, srv := startSim(t, simConfig("hang", "m1"))
				sim.SetFaults(llmsim.Faults{Hang: true})
				return newSidecar(t, Config{FirstByteTimeout: 100 * time.Millisecond}, instance("hang", srv, "m1"))
			},
			body: chat, status: 504, typ: "server_error", code: "upstream_timeout",
		},
		{
			name: "instance slower than its model's own first-byte timeout",
			setup: func(t *testing.T) *sidecar {
				sim, srv := startSim(t, simConfig("hang", "m1"))
				sim.SetFaults(llmsim.Faults{Hang: true})
				return newSidecar(t, Config{ModelFirstByteTimeout: map[string]time.Duration{"m1": 100 * time.Millisecond}}, instance("hang", srv, "m1"))
			},
			body: chat, status: 504, typ: "server_error", code: "upstream_timeout",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setup := tt.setup
			if setup == nil {
				setup = func(t *testing.T) *sidecar { return newSidecar(t, Config{}, echo(t)) }
			}
			sc := setup(t)
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = hideLen{body}
			}
			req, err := http.NewRequest(http.MethodPost, sc.url+"/v1/chat/completions", body)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Set(tt.header[i], tt.header[i+1])
			}
			resp, got := sc.do(t, req)
			e := checkAPIError(t, resp, got, tt.status, tt.typ, tt.code)
			if (e.Param == nil) != (tt.param == "") || (e.Param != nil && *e.Param != tt.param) {
				t.Errorf("param = %v, want %q (empty: null)", deref(e.Param), tt.param)
			}
			ra := resp.Header.Get("Retry-After")
			if tt.retryAfter {
				if n, err := strconv.Atoi(ra); err != nil || n < 1 {
					t.Errorf("Retry-After = %q, want a whole number of seconds >= 1", ra)
				}
			} else if ra != "" {
				t.Errorf("Retry-After = %q, want none", ra)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("X-Content-Type-Options: nosniff is missing")
			}
		})
	}
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// failing answers every request with status and an engine-style error, and
// counts them.
type failing struct {
	status int
	hits   atomic.Int64
}

func (f *failing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	_, _ = io.WriteString(w, `{"error":{"message":"engine says no","type":"server_error","param":null,"code":"engine_`+strconv.Itoa(f.status)+`"}}`)
}

func TestRetry(t *testing.T) {
	const chat = `{"model":"m1","messages":[]}`
	// Round-robin starts with the first instance by id, so "a-..." is
	// always tried first.
	tests := []struct {
		name       string
		maxRetries int
		first      func(t *testing.T) (discovery.Instance, *failing)
		wantStatus int
		wantInst   string
		wantRoute  string
		wantReason string // blitz_retries_total label, "" for no retry
		firstHits  int64  // requests the first instance must have seen (-1: unreachable)
	}{
		{
			name: "dead instance then live",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				return discovery.Instance{ID: "a-dead", Address: deadAddr(t), Models: []string{"m1"}}, nil
			},
			wantStatus: 200, wantInst: "b-live", wantRoute: "retry", wantReason: "connect", firstHits: -1,
		},
		{
			name: "engine 503 then healthy",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				f := &failing{status: 503}
				return instance("a-503", startBackend(t, f), "m1"), f
			},
			wantStatus: 200, wantInst: "b-live", wantRoute: "retry", wantReason: "status_503", firstHits: 1,
		},
		{
			name: "engine 429 then healthy",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				f := &failing{status: 429}
				return instance("a-429", startBackend(t, f), "m1"), f
			},
			wantStatus: 200, wantInst: "b-live", wantRoute: "retry", wantReason: "status_429", firstHits: 1,
		},
		{
			name: "engine 400 is the client's fault: not retried",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				f := &failing{status: 400}
				return instance("a-400", startBackend(t, f), "m1"), f
			},
			wantStatus: 400, wantInst: "a-400", wantRoute: "round-robin", firstHits: 1,
		},
		{
			// An engine's 500 is its own failure (an engine error, CUDA OOM),
			// so another instance may well serve the request.
			name: "engine 500 then healthy",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				f := &failing{status: 500}
				return instance("a-500", startBackend(t, f), "m1"), f
			},
			wantStatus: 200, wantInst: "b-live", wantRoute: "retry", wantReason: "status_500", firstHits: 1,
		},
		{
			name: "engine 501 is relayed, not retried",
			first: func(t *testing.T) (discovery.Instance, *failing) {
				f := &failing{status: 501}
				return instance("a-501", startBackend(t, f), "m1"), f
			},
			wantStatus: 501, wantInst: "a-501", wantRoute: "round-robin", firstHits: 1,
		},
		{
			name:       "retries disabled",
			maxRetries: -1,
			first: func(t *testing.T) (discovery.Instance, *failing) {
				return discovery.Instance{ID: "a-dead", Address: deadAddr(t), Models: []string{"m1"}}, nil
			},
			wantStatus: 502, firstHits: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := &recorder{}
			liveSrv := startBackend(t, live)
			first, f := tt.first(t)
			sc := newSidecar(t, Config{Policy: "round-robin", MaxRetries: tt.maxRetries}, first, instance("b-live", liveSrv, "m1"))
			resp, body := sc.post(t, "/v1/chat/completions", chat)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantInst != "" {
				if got := resp.Header.Get("X-Blitz-Instance"); got != tt.wantInst {
					t.Errorf("X-Blitz-Instance = %q, want %q", got, tt.wantInst)
				}
				if got := resp.Header.Get("X-Blitz-Route"); got != tt.wantRoute {
					t.Errorf("X-Blitz-Route = %q, want %q", got, tt.wantRoute)
				}
			}
			if f != nil && f.hits.Load() != tt.firstHits {
				t.Errorf("first instance saw %d requests, want %d", f.hits.Load(), tt.firstHits)
			}
			if tt.wantStatus == 200 && string(live.last(t).Body) != chat {
				t.Errorf("the retried body = %q, want %q", live.last(t).Body, chat)
			}
			if tt.wantReason != "" {
				if n := testutil.ToFloat64(sc.s.metrics.retries.WithLabelValues(tt.wantReason)); n != 1 {
					t.Errorf("blitz_retries_total{reason=%q} = %v, want 1", tt.wantReason, n)
				}
			}
			for _, ep := range sc.s.Router().Table().Endpoints() {
				if n := ep.Load.InFlight(); n != 0 {
					t.Errorf("instance %s: in flight = %d after the request, want 0", ep.Instance.ID, n)
				}
			}
		})
	}
}

// TestRetryExhausted: when every instance answers 503, the client gets the
// last engine's own answer rather than a made-up one.
func TestRetryExhausted(t *testing.T) {
	a, b := &failing{status: 503}, &failing{status: 503}
	sc := newSidecar(t, Config{Policy: "round-robin"},
		instance("a", startBackend(t, a), "m1"), instance("b", startBackend(t, b), "m1"))
	resp, body := sc.post(t, "/v1/chat/completions", `{"model":"m1"}`)
	if resp.StatusCode != 503 || !strings.Contains(string(body), "engine_503") {
		t.Fatalf("status %d body %s; want the engine's 503", resp.StatusCode, body)
	}
	if a.hits.Load() != 1 || b.hits.Load() != 1 {
		t.Errorf("hits a=%d b=%d, want one each", a.hits.Load(), b.hits.Load())
	}
	if got := resp.Header.Get("X-Blitz-Route"); got != "retry" {
		t.Errorf("X-Blitz-Route = %q, want retry", got)
	}
}

// TestBodyLimitBoundary: a body of exactly MaxBodyBytes passes, one byte
// more does not, whether its length is announced or not.
func TestBodyLimitBoundary(t *testing.T) {
	const limit = 64
	sc := newSidecar(t, Config{MaxBodyBytes: limit}, instance("a", startBackend(t, &recorder{}), "m1"))
	bodyOf := func(n int) string {
		s := `{"model":"m1","p":""}`
		return s[:len(s)-2] + strings.Repeat("x", n-len(s)) + `"}`
	}
	for _, tt := range []struct {
		name    string
		size    int
		chunked bool
		status  int
	}{
		{"at the limit", limit, false, 200},
		{"one byte over", limit + 1, false, 413},
		{"chunked at the limit", limit, true, 200},
		{"chunked one byte over", limit + 1, true, 413},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := bodyOf(tt.size)
			var rd io.Reader = strings.NewReader(body)
			if tt.chunked {
				rd = hideLen{rd}
			}
			req, _ := http.NewRequest(http.MethodPost, sc.url+"/v1/chat/completions", rd)
			resp, got := sc.do(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("%d-byte body: status %d, want %d: %s", len(body), resp.StatusCode, tt.status, got)
			}
			if tt.status == 200 && string(got) != body {
				t.Errorf("echo %q, want %q", got, body)
			}
		})
	}
}
