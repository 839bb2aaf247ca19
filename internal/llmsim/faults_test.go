package llmsim

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const chatBody = `{"model":"m1","max_tokens":2,"messages":[{"role":"user","content":"x"}]}`

func TestFaultErrorRatio(t *testing.T) {
	tests := []struct {
		ratio      float64
		wantErrors int
	}{
		{0, 0},
		{1, 20},
		{0.5, -1}, // some but not all
	}
	for _, tt := range tests {
		t.Run(strconvF(tt.ratio), func(t *testing.T) {
			s, srv := startSim(t, fastConfig())
			s.SetFaults(Faults{ErrorRatio: tt.ratio})
			errs := 0
			for range 20 {
				resp, b := do(t, srv, http.MethodPost, "/v1/chat/completions", chatBody)
				switch resp.StatusCode {
				case http.StatusOK:
				case http.StatusInternalServerError:
					var e errorBody
					decodeJSON(t, b, &e)
					if e.Error.Type != "server_error" || deref(e.Error.Code) != "internal_error" {
						t.Errorf("500 body %s; want server_error internal_error", b)
					}
					errs++
				default:
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
			}
			if tt.wantErrors >= 0 && errs != tt.wantErrors || tt.wantErrors < 0 && (errs == 0 || errs == 20) {
				t.Errorf("%d of 20 failed", errs)
			}
			if st := s.Stats(); st.Errors != int64(errs) || st.Completed != int64(20-errs) {
				t.Errorf("stats %+v; want %d errors", st, errs)
			}
		})
	}
}

func TestFaultHang(t *testing.T) {
	for _, path := range []string{"/v1/chat/completions", "/v1/embeddings"} {
		t.Run(path, func(t *testing.T) {
			s, srv := startSim(t, fastConfig())
			s.SetFaults(Faults{Hang: true})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				body := `{"model":"m1","stream":true,"input":"x","messages":[{"role":"user","content":"x"}]}`
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader(body))
				resp, err := srv.Client().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			waitFor(t, "the request to arrive", func() bool { return s.Stats().Requests == 1 })
			select {
			case err := <-done:
				t.Fatalf("hung request answered: %v", err)
			case <-time.After(50 * time.Millisecond): // it stays unanswered
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("client error = %v; want context.Canceled", err)
			}
			waitFor(t, "cancellation to be counted", func() bool { return s.Stats().Cancelled == 1 })
		})
	}
}

func TestFaultUnhealthy(t *testing.T) {
	s, srv := startSim(t, fastConfig())
	if resp, _ := do(t, srv, http.MethodGet, "/health", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("healthy: status %d; want 200", resp.StatusCode)
	}
	s.SetFaults(Faults{Unhealthy: true})
	if resp, _ := do(t, srv, http.MethodGet, "/health", ""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("unhealthy: status %d; want 503", resp.StatusCode)
	}
	if resp, _ := do(t, srv, http.MethodPost, "/v1/chat/completions", chatBody); resp.StatusCode != http.StatusOK {
		t.Errorf("inference while unhealthy: status %d; want 200", resp.StatusCode)
	}
}

func TestFaultFailMidStream(t *testing.T) {
	tests := []struct {
		name, path, body string
		failAfter        int
		wantEvents       int
		wantCut          bool
	}{
		{"chat cut after 2", "/v1/chat/completions", `{"model":"m1","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, 2, 2, true},
		{"completion cut after 1", "/v1/completions", `{"model":"m1","stream":true,"max_tokens":5,"prompt":"x"}`, 1, 1, true},
		{"short stream unaffected", "/v1/completions", `{"model":"m1","stream":true,"max_tokens":2,"prompt":"x"}`, 3, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := startSim(t, fastConfig())
			s.SetFaults(Faults{FailMidStream: tt.failAfter})
			resp := open(t, context.Background(), srv, http.MethodPost, tt.path, tt.body)
			defer resp.Body.Close()
			events, err := newEventReader(resp.Body).all()
			if cut := errors.Is(err, io.ErrUnexpectedEOF); cut != tt.wantCut {
				t.Errorf("stream error = %v; want cut %v", err, tt.wantCut)
			}
			if len(events) != tt.wantEvents {
				t.Errorf("got %d events %q; want %d", len(events), events, tt.wantEvents)
			}
			if tt.wantCut && s.Stats().Errors != 1 || !tt.wantCut && s.Stats().Completed != 1 {
				t.Errorf("stats %+v", s.Stats())
			}
			// Non-streaming requests are unaffected.
			if resp, b := do(t, srv, http.MethodPost, "/v1/completions", `{"model":"m1","prompt":"x"}`); resp.StatusCode != http.StatusOK {
				t.Errorf("non-streaming: status %d: %s", resp.StatusCode, b)
			}
		})
	}
}

func TestFaultSlowFactor(t *testing.T) {
	f := Faults{SlowFactor: 3}
	if got := f.scale(10 * time.Millisecond); got != 30*time.Millisecond {
		t.Errorf("scale = %v; want 30ms", got)
	}
	for _, k := range []float64{0, 1, -2} {
		if got := (Faults{SlowFactor: k}).scale(time.Second); got != time.Second {
			t.Errorf("SlowFactor %v: scale = %v; want unchanged", k, got)
		}
	}
}

func TestSimEndpoints(t *testing.T) {
	s, srv := startSim(t, fastConfig())
	tests := []struct {
		name, body string
		status     int
		param      string
	}{
		{"set", `{"error_ratio":1,"slow_factor":2,"unhealthy":true,"fail_mid_stream":3,"hang":false}`, 200, ""},
		{"unknown field", `{"error_rate":1}`, 400, ""},
		{"ratio out of range", `{"error_ratio":2}`, 400, "error_ratio"},
		{"negative slow", `{"slow_factor":-1}`, 400, "slow_factor"},
		{"negative fail", `{"fail_mid_stream":-1}`, 400, "fail_mid_stream"},
	}
	want := Faults{ErrorRatio: 1, SlowFactor: 2, Unhealthy: true, FailMidStream: 3}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, srv, http.MethodPost, "/sim/faults", tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (%s)", resp.StatusCode, tt.status, b)
			}
			if tt.status != 200 {
				var e errorBody
				decodeJSON(t, b, &e)
				if deref(e.Error.Param) != tt.param {
					t.Errorf("param %q; want %q (%s)", deref(e.Error.Param), tt.param, b)
				}
			}
			// A rejected body leaves the faults as they were.
			_, b = do(t, srv, http.MethodGet, "/sim/faults", "")
			var got Faults
			decodeJSON(t, b, &got)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("GET /sim/faults (-want +got):\n%s", diff)
			}
		})
	}
	if diff := cmp.Diff(want, s.Faults()); diff != "" {
		t.Errorf("Faults() (-want +got):\n%s", diff)
	}
	if resp, _ := do(t, srv, http.MethodPost, "/v1/chat/completions", chatBody); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("with error_ratio 1: status %d; want 500", resp.StatusCode)
	}
	do(t, srv, http.MethodPost, "/sim/faults", `{}`)
	if resp, _ := do(t, srv, http.MethodPost, "/v1/chat/completions", chatBody); resp.StatusCode != http.StatusOK {
		t.Errorf("after reset: status %d; want 200", resp.StatusCode)
	}
	_, b := do(t, srv, http.MethodGet, "/sim/stats", "")
	var st Stats
	decodeJSON(t, b, &st)
	if diff := cmp.Diff(s.Stats(), st); diff != "" || st.Requests != 2 || st.Errors != 1 || st.Completed != 1 {
		t.Errorf("GET /sim/stats = %+v (diff with Stats(): %s); want 2 requests, 1 error, 1 completed", st, diff)
	}
}

func strconvF(f float64) string { return "ratio=" + itoa(int(f*100)) + "%" }
