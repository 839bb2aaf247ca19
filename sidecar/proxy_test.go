package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

// hideLen hides a reader's length from net/http so that the request is sent
// with Transfer-Encoding: chunked.
type hideLen struct{ io.Reader }

func TestProxyForwardsBodyUnchanged(t *testing.T) {
	target := &recorder{}
	decoy := &recorder{}
	targetSrv := startBackend(t, target)
	decoySrv := startBackend(t, decoy)
	sc := newSidecar(t, Config{Policy: "round-robin"},
		instance("target", targetSrv, "m1", "org/model:lora"),
		instance("decoy", decoySrv, "decoy"))

	tests := []struct {
		name    string
		path    string
		body    string
		chunked bool
	}{
		{name: "chat", path: "/v1/chat/completions", body: `{"model":"m1","messages":[{"role":"user","content":"hi"}]}`},
		// The last "model" wins, as in the engine's JSON parser; the bytes,
		// the odd white space and both keys reach the engine untouched.
		{name: "duplicate model and odd white space", path: "/v1/chat/completions",
			body: "\r\n\t{ \"model\" :\"decoy\" ,\n\t\"messages\"  : [ ] ,\"model\"\t:\r\n\"m1\"   ,\"x\":[1 ,2.50e+3,{\"model\":\"decoy\"}] }\n\n"},
		{name: "escaped model", path: "/v1/completions", body: `{"prompt":"a\"b\u00e9\\","model":"org\/model:lora"}`},
		{name: "non-ASCII and large numbers", path: "/v1/embeddings", body: `{"model":"m1","input":"héllo wörld ✓","n":12345678901234567890}`},
		{name: "any POST under v1", path: "/v1/some/new/api", body: `{"model":"m1"}`},
		{name: "chunked upload", path: "/v1/chat/completions", body: `{"model":"m1","messages":[]}` + strings.Repeat(" ", 3000), chunked: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = hideLen{body}
			}
			req, err := http.NewRequest(http.MethodPost, sc.url+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, got := sc.do(t, req)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, body %s", resp.StatusCode, got)
			}
			if !bytes.Equal(got, []byte(tt.body)) {
				t.Errorf("echoed body differs:\n got %q\nwant %q", got, tt.body)
			}
			rec := target.last(t)
			if !bytes.Equal(rec.Body, []byte(tt.body)) {
				t.Errorf("backend received %q, want %q", rec.Body, tt.body)
			}
			if rec.Path != tt.path || rec.Method != http.MethodPost {
				t.Errorf("backend got %s %s, want POST %s", rec.Method, rec.Path, tt.path)
			}
			if got := resp.Header.Get("X-Blitz-Instance"); got != "target" {
				t.Errorf("X-Blitz-Instance = %q, want target", got)
			}
			if got := resp.Header.Get("X-Blitz-Route"); got != "round-robin" {
				t.Errorf("X-Blitz-Route = %q, want round-robin", got)
			}
			if got := resp.Header.Get("X-Backend"); got != "echo" {
				t.Errorf("backend response header X-Backend = %q, want echo", got)
			}
		})
	}
	if n := len(decoy.requests()); n != 0 {
		t.Errorf("the decoy instance received %d requests; the last model key must win", n)
	}
}

func TestProxyRoutesAcrossInstances(t *testing.T) {
	a, b := &recorder{}, &recorder{}
	sc := newSidecar(t, Config{Policy: "round-robin"},
		instance("a", startBackend(t, a), "m1"),
		instance("b", startBackend(t, b), "m1"))
	seen := map[string]int{}
	for range 4 {
		resp, body := sc.post(t, "/v1/chat/completions", `{"model":"m1"}`)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		seen[resp.Header.Get("X-Blitz-Instance")]++
	}
	if seen["a"] != 2 || seen["b"] != 2 || len(a.requests()) != 2 || len(b.requests()) != 2 {
		t.Errorf("round-robin over two instances: headers %v, a got %d, b got %d; want 2 each",
			seen, len(a.requests()), len(b.requests()))
	}
}

// simConfig is a simulator that answers in a few milliseconds.
func simConfig(id string, models ...string) llmsim.Config {
	return llmsim.Config{ID: id, Models: models, TTFT: time.Millisecond, ITL: time.Millisecond, Seed: 1}
}

func TestProxyToSimulator(t *testing.T) {
	_, simSrv := startSim(t, simConfig("sim-a", "m1", "m2"))
	sc := newSidecar(t, Config{}, instance("sim-a", simSrv, "m1", "m2"))

	tests := []struct {
		name   string
		path   string
		body   string
		stream bool
		events int // data events before [DONE]
	}{
		{name: "chat", path: "/v1/chat/completions", body: `{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":4}`},
		{name: "completion", path: "/v1/completions", body: `{"model":"m2","prompt":"once upon","max_tokens":3}`},
		{name: "embeddings", path: "/v1/embeddings", body: `{"model":"m1","input":"hello"}`},
		// A chat stream sends a role chunk, then one chunk per token.
		{name: "chat stream", path: "/v1/chat/completions", stream: true, events: 1 + 5,
			body: `{"model":"m1","messages":[{"role":"user","content":"hello"}],"max_tokens":5,"stream":true}`},
		{name: "completion stream with usage", path: "/v1/completions", stream: true, events: 3 + 1,
			body: `{"model":"m2","prompt":"hi","max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := sc.post(t, tt.path, tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d: %s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("X-Blitz-Instance"); got != "sim-a" {
				t.Errorf("X-Blitz-Instance = %q, want sim-a", got)
			}
			if got := resp.Header.Get("X-Blitz-Route"); got == "" {
				t.Error("X-Blitz-Route is missing")
			}
			if got := resp.Header.Get(llmsim.HeaderID); got != "sim-a" {
				t.Errorf("engine header %s = %q, want sim-a", llmsim.HeaderID, got)
			}
			if !tt.stream {
				var v struct {
					Object string `json:"object"`
					Data   []any  `json:"data"`
					Choice []any  `json:"choices"`
				}
				if err := json.Unmarshal(body, &v); err != nil || v.Object == "" || len(v.Data)+len(v.Choice) == 0 {
					t.Errorf("body %s: want an OpenAI object with choices or data (err %v)", body, err)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type = %q, want text/event-stream", ct)
			}
			events, err := newSSEReader(bytes.NewReader(body)).all()
			if err != nil {
				t.Fatalf("read events: %v", err)
			}
			if len(events) != tt.events+1 || events[len(events)-1] != "[DONE]" {
				t.Fatalf("got %d events ending %q, want %d data events then [DONE]:\n%s", len(events), events[len(events)-1], tt.events, body)
			}
			for _, e := range events[:len(events)-1] {
				if !json.Valid([]byte(e)) {
					t.Errorf("event %q is not JSON", e)
				}
			}
		})
	}
}

// TestConcurrentRequestsKeepTheirBodies sends many requests at once, half
// of them first to an engine that answers 503 without reading the body
// (so the transport may still be writing it when the retry starts), and
// checks that every request reaches the echoing engine with its own bytes:
// a pooled exchange reused too early would mix bodies up.
func TestConcurrentRequestsKeepTheirBodies(t *testing.T) {
	refuse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	sc := newSidecar(t, Config{Policy: "round-robin"},
		instance("a-refuse", startBackend(t, refuse), "m1"),
		instance("b-echo", startBackend(t, &recorder{}), "m1"))

	const workers, perWorker = 16, 12
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				pad := strings.Repeat(string(rune('a'+w%26)), (w*perWorker+i)%7*40_000)
				body := fmt.Sprintf(`{"model":"m1","worker":%d,"i":%d,"pad":"%s"}`, w, i, pad)
				resp, err := sc.client.Post(sc.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					continue
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					errs <- err
				case resp.StatusCode != http.StatusOK:
					errs <- fmt.Errorf("worker %d request %d: status %d", w, i, resp.StatusCode)
				case string(got) != body:
					errs <- fmt.Errorf("worker %d request %d: got another body (%d bytes, want %d)", w, i, len(got), len(body))
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, ep := range sc.s.Router().Table().Endpoints() {
		if n := ep.Load.InFlight(); n != 0 {
			t.Errorf("instance %s: in flight = %d after every request ended", ep.Instance.ID, n)
		}
	}
}

// TestModelFirstByteTimeout: a model with its own first-byte timeout waits
// for a slow prefill that the default timeout cuts short for other models.
func TestModelFirstByteTimeout(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"slow", "fast"}, TTFT: 400 * time.Millisecond, ITL: time.Millisecond})
	sc := newSidecar(t, Config{FirstByteTimeout: 100 * time.Millisecond, ModelFirstByteTimeout: map[string]time.Duration{"slow": time.Minute}},
		instance("e", srv, "slow", "fast"))
	if resp, body := sc.post(t, "/v1/completions", `{"model":"slow","max_tokens":1,"prompt":"x"}`); resp.StatusCode != 200 {
		t.Errorf("slow model under its own timeout: %d %s", resp.StatusCode, body)
	}
	if resp, body := sc.post(t, "/v1/completions", `{"model":"fast","max_tokens":1,"prompt":"x"}`); resp.StatusCode != 504 {
		t.Errorf("other model under the default timeout: %d %s, want 504", resp.StatusCode, body)
	}
	// A stream's first event is bounded the same way (its headers come at
	// admission, before the prefill).
	if resp, body := sc.post(t, "/v1/completions", `{"model":"slow","max_tokens":1,"stream":true,"prompt":"x"}`); resp.StatusCode != 200 || !strings.Contains(string(body), "[DONE]") {
		t.Errorf("slow model stream: %d %s", resp.StatusCode, body)
	}
}
