package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/blitzscale/router/discovery"
)

// oneShot is a discovery.Source that sends one snapshot, then waits for the
// end of its context.
type oneShot struct{ snap discovery.Snapshot }

func (o oneShot) Watch(ctx context.Context) <-chan discovery.Snapshot {
	ch := make(chan discovery.Snapshot)
	go func() {
		defer close(ch)
		select {
		case ch <- o.snap:
		case <-ctx.Done():
			return
		}
		<-ctx.Done()
	}()
	return ch
}

// serveDirect answers one request with s.ServeHTTP in-process.
func serveDirect(s *Server, method, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

// TestGracefulShutdown runs the sidecar with Run on a real listener, opens a
// stream, cancels Run's context and checks that the sidecar reports not
// ready, refuses new connections, and either lets the stream finish or, once
// ShutdownTimeout has passed, cuts it; Run returns nil in both cases.
func TestGracefulShutdown(t *testing.T) {
	tests := []struct {
		name            string
		shutdownTimeout time.Duration
		release         bool // the engine finishes the stream during shutdown
	}{
		{name: "open stream finishes", shutdownTimeout: waitTimeout, release: true},
		{name: "stream outlives the shutdown timeout", shutdownTimeout: 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			backend := startBackend(t, heldStream("text/event-stream", "data: {\"n\":1}\n\n", "data: {\"n\":2}\n\ndata: [DONE]\n\n", g))
			s := newServer(t, Config{ShutdownTimeout: tt.shutdownTimeout})
			t.Cleanup(trackUpstreams(s))
			snap, err := discovery.NewSnapshot("static", []discovery.Instance{instance("a", backend, "m1")}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, ln, oneShot{snap}) }()
			returned := false
			t.Cleanup(func() {
				cancel()
				if !returned {
					<-done
				}
			})
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			sc := &sidecar{s: s, url: "http://" + addr, client: &http.Client{Transport: tr}}

			waitFor(t, "discovery to sync through Run", func() bool {
				resp, err := sc.client.Get(sc.url + "/readyz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			sctx, scancel := context.WithTimeout(context.Background(), waitTimeout)
			defer scancel()
			resp := sc.openStream(t, sctx, `{"model":"m1","stream":true}`)
			events := newSSEReader(resp.Body)
			if first, err := events.next(); err != nil || first != `{"n":1}` {
				t.Fatalf("first event %q, %v", first, err)
			}

			cancel()
			waitFor(t, "/readyz to report 503 while stopping", func() bool {
				return serveDirect(s, http.MethodGet, "/readyz").Code == http.StatusServiceUnavailable
			})
			waitFor(t, "new connections to be refused", func() bool {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
					return false
				}
				return errors.Is(err, syscall.ECONNREFUSED)
			})
			if serveDirect(s, http.MethodGet, "/healthz").Code != http.StatusOK {
				t.Error("/healthz must stay 200 while the process serves")
			}

			if tt.release {
				g.open()
				rest, err := events.all()
				if err != nil {
					t.Fatalf("the open stream broke during shutdown: %v (got %q)", err, rest)
				}
				if want := []string{`{"n":2}`, "[DONE]"}; !cmp.Equal(rest, want) {
					t.Errorf("rest of the stream = %q, want %q", rest, want)
				}
			}
			select {
			case err := <-done:
				returned = true
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("Run did not return after the stream ended")
			}
			if !tt.release {
				if rest, err := events.all(); err == nil && len(rest) > 0 && rest[len(rest)-1] == "[DONE]" {
					t.Errorf("the held stream completed (%q) though the engine never finished it", rest)
				}
			}
		})
	}
}

func TestInfoEndpoints(t *testing.T) {
	a := instance("a", startBackend(t, &recorder{}), "m1", "shared", "org/llama:lora")
	a.Meta = map[string]string{"zone": "z1"}
	b := instance("b", startBackend(t, &recorder{}), "shared", "drain-only")
	b.Draining, b.Weight = true, 3
	sc := newSidecar(t, Config{SidecarID: "sc-1"})

	t.Run("before the first sync", func(t *testing.T) {
		for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/v1/models": 200} {
			if resp, body := sc.get(t, path); resp.StatusCode != want {
				t.Errorf("GET %s = %d, want %d: %s", path, resp.StatusCode, want, body)
			}
		}
		var st State
		_, body := sc.get(t, "/state")
		if err := json.Unmarshal(body, &st); err != nil || st.Ready || len(st.Instances) != 0 {
			t.Errorf("/state before sync = %s (%v); want not ready, no instances", body, err)
		}
	})
	apply(t, sc.s, a, b)

	t.Run("readyz after sync", func(t *testing.T) {
		if resp, _ := sc.get(t, "/readyz"); resp.StatusCode != 200 {
			t.Errorf("GET /readyz = %d, want 200", resp.StatusCode)
		}
	})
	t.Run("model list", func(t *testing.T) {
		resp, body := sc.get(t, "/v1/models")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /v1/models = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var list struct {
			Object string `json:"object"`
			Data   []struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				OwnedBy string `json:"owned_by"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		var ids []string
		for _, m := range list.Data {
			ids = append(ids, m.ID)
			if m.Object != "model" || m.OwnedBy == "" {
				t.Errorf("model %+v: want object \"model\" and an owner", m)
			}
		}
		// drain-only is served by a draining instance only: not listed.
		if diff := cmp.Diff([]string{"m1", "org/llama:lora", "shared"}, ids); list.Object != "list" || diff != "" {
			t.Errorf("object %q, ids (-want +got):\n%s", list.Object, diff)
		}
	})
	t.Run("one model", func(t *testing.T) {
		for _, tt := range []struct {
			id     string
			status int
		}{{"m1", 200}, {"org/llama:lora", 200}, {"shared", 200}, {"drain-only", 404}, {"nope", 404}} {
			resp, body := sc.get(t, "/v1/models/"+tt.id)
			if tt.status == 404 {
				checkAPIError(t, resp, body, 404, "invalid_request_error", "model_not_found")
				continue
			}
			var m struct{ ID, Object string }
			if err := json.Unmarshal(body, &m); err != nil || resp.StatusCode != 200 || m.ID != tt.id || m.Object != "model" {
				t.Errorf("GET /v1/models/%s = %d %s", tt.id, resp.StatusCode, body)
			}
		}
	})
	t.Run("state", func(t *testing.T) {
		resp, body := sc.get(t, "/state")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /state = %d", resp.StatusCode)
		}
		var st State
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("decode /state %s: %v", body, err)
		}
		for i := range st.Instances {
			st.Instances[i].Address = "" // ports vary
		}
		want := State{
			SidecarID: "sc-1", Ready: true, Policy: "auto", Source: "static",
			Models: []string{"drain-only", "m1", "org/llama:lora", "shared"},
			Queued: map[string]int{"high": 0, "normal": 0, "low": 0},
			Instances: []InstanceState{
				{ID: "a", Models: a.Models, Meta: a.Meta, Weight: 1, Health: "routable", Breaker: "closed", Cap: 256},
				{ID: "b", Models: b.Models, Weight: 3, Health: "draining", Breaker: "closed", Cap: 256},
			},
		}
		if diff := cmp.Diff(want, st, cmpIgnoreSyncedAt); diff != "" {
			t.Errorf("/state (-want +got):\n%s", diff)
		}
		if st.SyncedAt.IsZero() {
			t.Error("/state synced_at is missing")
		}
	})
	t.Run("unknown routes", func(t *testing.T) {
		for _, tt := range []struct {
			method, path string
			status       int
			code         string
		}{
			{"GET", "/nope", 404, "not_found"},
			{"GET", "/v1/chat/completions", 404, "not_found"},
			{"POST", "/healthz", 405, "method_not_allowed"},
			{"DELETE", "/v1/models", 404, "not_found"},
		} {
			req, _ := http.NewRequest(tt.method, sc.url+tt.path, nil)
			resp, body := sc.do(t, req)
			checkAPIError(t, resp, body, tt.status, "invalid_request_error", tt.code)
		}
	})
}

// cmpIgnoreSyncedAt compares States without their sync time.
var cmpIgnoreSyncedAt = cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".SyncedAt" }, cmp.Ignore())

func TestMetrics(t *testing.T) {
	_, simSrv := startSim(t, simConfig("a", "m1", "m2"))
	d := instance("d", startBackend(t, &recorder{}), "m1", "drain-only")
	d.Draining = true
	sc := newSidecar(t, Config{}, instance("a", simSrv, "m1", "m2"), d)

	// A stream for the instance's second model: its TTFT must be labelled
	// with that model, not the instance's first one.
	resp, body := sc.post(t, "/v1/chat/completions", `{"model":"m2","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true}`)
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	sc.post(t, "/v1/chat/completions", `{"model":"unknown"}`)
	sc.post(t, "/v1/chat/completions", `{"model":"m1"}`, "X-Blitz-Priority", "high") // sim answers 400: no messages
	sc.post(t, "/v1/chat/completions", `{"model":"drain-only"}`, "X-Blitz-Priority", "low")

	resp, body = sc.get(t, "/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	text := string(body)
	for _, want := range []string{
		`blitz_requests_total{code="200",instance="a",model="m2",priority="normal"} 1`,
		`blitz_requests_total{code="404",instance="none",model="none",priority="normal"} 1`,
		`blitz_requests_total{code="400",instance="a",model="m1",priority="high"} 1`,
		`blitz_time_to_first_token_seconds_count{model="m2"} 1`,
		`blitz_request_duration_seconds_count{model="m2",priority="normal"} 1`,
		`blitz_inflight_requests{instance="a"} 0`,
		`blitz_instances{model="m1",state="draining"} 1`,
		`blitz_instances{model="m1",state="routable"} 1`,
		`blitz_discovery_last_sync_timestamp_seconds{source="static"}`,
		`blitz_requests_total{code="503",instance="none",model="drain-only",priority="low"} 1`,
		// Shedding is counted under the request's own priority.
		`blitz_shed_total{priority="low",reason="no_healthy_upstream"} 1`,
		`blitz_overhead_seconds_count 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, `blitz_time_to_first_token_seconds_count{model="m1"}`) {
		t.Error("the TTFT of an m2 stream was labelled m1")
	}
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		path         string
		authz        string // the client's Authorization; "" sends none
		status       int
		upstreamAuth string // what the engine must receive; "" means none
	}{
		{name: "no token", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", status: 401},
		{name: "wrong token", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", authz: "Bearer s3cre", status: 401},
		{name: "longer token", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", authz: "Bearer s3cret2", status: 401},
		{name: "basic scheme", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", authz: "Basic s3cret", status: 401},
		{name: "model list without token", cfg: Config{AuthToken: "s3cret"}, path: "/v1/models", status: 401},
		{name: "state without token", cfg: Config{AuthToken: "s3cret"}, path: "/state", status: 401},
		{name: "healthz is open", cfg: Config{AuthToken: "s3cret"}, path: "/healthz", status: 200},
		{name: "metrics is open", cfg: Config{AuthToken: "s3cret"}, path: "/metrics", status: 200},
		{name: "right token is not forwarded", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", authz: "Bearer s3cret", status: 200},
		{name: "scheme is case-insensitive", cfg: Config{AuthToken: "s3cret"}, path: "/v1/chat/completions", authz: "bearer s3cret", status: 200},
		{
			name: "upstream key replaces the sidecar token", cfg: Config{AuthToken: "s3cret", UpstreamAPIKey: "engine-key"},
			path: "/v1/chat/completions", authz: "Bearer s3cret", status: 200, upstreamAuth: "Bearer engine-key",
		},
		{
			name: "upstream key replaces the client's key", cfg: Config{UpstreamAPIKey: "engine-key"},
			path: "/v1/chat/completions", authz: "Bearer app-key", status: 200, upstreamAuth: "Bearer engine-key",
		},
		{name: "upstream key without client key", cfg: Config{UpstreamAPIKey: "engine-key"}, path: "/v1/chat/completions", status: 200, upstreamAuth: "Bearer engine-key"},
		{name: "no auth configured: the client's key passes", path: "/v1/chat/completions", authz: "Bearer app-key", status: 200, upstreamAuth: "Bearer app-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			sc := newSidecar(t, tt.cfg, instance("a", startBackend(t, rec), "m1"))
			method, body := http.MethodGet, io.Reader(nil)
			if strings.HasPrefix(tt.path, "/v1/chat") {
				method, body = http.MethodPost, strings.NewReader(`{"model":"m1"}`)
			}
			req, _ := http.NewRequest(method, sc.url+tt.path, body)
			if tt.authz != "" {
				req.Header.Set("Authorization", tt.authz)
			}
			resp, got := sc.do(t, req)
			if tt.status == 401 {
				checkAPIError(t, resp, got, 401, "authentication_error", "invalid_api_key")
				if n := len(rec.requests()); n != 0 {
					t.Errorf("the engine received %d requests from an unauthorized client", n)
				}
				return
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tt.status, got)
			}
			if method != http.MethodPost {
				return
			}
			up := rec.last(t).Header.Values("Authorization")
			switch {
			case tt.upstreamAuth == "" && len(up) != 0:
				t.Errorf("the engine received Authorization %q, want none", up)
			case tt.upstreamAuth != "" && (len(up) != 1 || up[0] != tt.upstreamAuth):
				t.Errorf("the engine received Authorization %q, want %q", up, tt.upstreamAuth)
			}
		})
	}
}
