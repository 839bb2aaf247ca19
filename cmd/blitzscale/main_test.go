package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"

	"github.com/blitzscale/router/internal/llmsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for a command writing while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) string { return "" }

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut syncBuffer
	code := run(context.Background(), args, &out, &errOut, noEnv)
	return code, out.String(), errOut.String()
}

func TestExitCodes(t *testing.T) {
	good := writeFile(t, "i.yaml", "- {id: a, address: '127.0.0.1:9', models: [m]}\n")
	bad := writeFile(t, "bad.yaml", "- {id: a, address: 'nope', models: [m]}\n")
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"no command", nil, 2, "usage"},
		{"unknown command", []string{"frobnicate"}, 2, "unknown command"},
		{"version", []string{"version"}, 0, ""},
		{"help", []string{"sidecar", "-h"}, 0, "-policy"},
		{"bad policy", []string{"sidecar", "--registry", "static", "--static-file", good, "--policy", "fastest"}, 2, "policy"},
		{"bad model first-byte timeout", []string{"sidecar", "--registry", "static", "--static-file", good, "--model-first-byte-timeout", "llama=soon"}, 2, "model-first-byte-timeout"},
		{"model first-byte timeout without model", []string{"sidecar", "--registry", "static", "--static-file", good, "--model-first-byte-timeout", "=5s"}, 2, "model-first-byte-timeout"},
		{"no static file", []string{"sidecar", "--registry", "static"}, 2, "static-file"},
		{"consul bad address", []string{"sidecar", "--registry", "consul", "--consul-addr", "http://[::1"}, 2, "consul-addr"},
		{"consul token file missing", []string{"sidecar", "--registry", "consul", "--consul-token-file", "/nonexistent/token"}, 2, "consul-token-file"},
		{"register consul bad meta key", []string{"register", "--registry", "consul", "--id", "a", "--address", "127.0.0.1:9", "--model", "m", "--meta", "bad key=1"}, 2, "meta"},
		{"embedded on a public address", []string{"sidecar", "--etcd-endpoints", "10.0.0.1:2379"}, 2, "etcd-endpoints"},
		{"bad etcd prefix", []string{"sidecar", "--registry", "etcd", "--etcd-prefix", "x/"}, 2, "etcd-prefix"},
		{"register without id", []string{"register", "--address", "127.0.0.1:9", "--model", "m"}, 2, "id"},
		{"register short ttl", []string{"register", "--id", "a", "--address", "127.0.0.1:9", "--model", "m", "--ttl", "2s"}, 2, "ttl"},
		{"register bad meta", []string{"register", "--id", "a", "--address", "127.0.0.1:9", "--model", "m", "--meta", "novalue"}, 2, "meta"},
		{"missing static file", []string{"sidecar", "--registry", "static", "--static-file", "/nonexistent.yaml"}, 2, "static-file"},
		{"invalid static file", []string{"sidecar", "--registry", "static", "--static-file", bad}, 2, "address"},
		{"public listen without token", []string{"sidecar", "--registry", "static", "--static-file", good, "--listen", "0.0.0.0:8089"}, 2, "auth-token-file"},
		{"bad listen", []string{"sidecar", "--registry", "static", "--static-file", good, "--listen", "nowhere"}, 2, "listen"},
		{"negative rate", []string{"sidecar", "--registry", "static", "--static-file", good, "--rate-low", "-1"}, 2, "rate-low"},
		{"bad registry", []string{"sidecar", "--registry", "zookeeper"}, 2, "registry"},
		{"public debug addr", []string{"sidecar", "--registry", "static", "--static-file", good, "--debug-addr", "0.0.0.0:6060"}, 2, "debug-addr"},
		{"bad log level", []string{"sidecar", "--registry", "static", "--static-file", good, "--log-level", "loud"}, 2, "log-level"},
		{"sim without model", []string{"sim"}, 2, "model"},
		{"sim bad concurrency", []string{"sim", "--model", "m", "--max-concurrency", "-1"}, 2, "max-concurrency"},
		{"status unreachable", []string{"status", "--sidecar", "http://127.0.0.1:1"}, 1, "127.0.0.1:1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCmd(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	_, out, _ := runCmd(t, "version")
	if !strings.HasPrefix(out, "blitzscale dev (commit unknown, go1.") {
		t.Errorf("version output %q", out)
	}
}

// startCmd runs a long-lived command until the test ends and returns its
// output buffers and a function that stops it and returns the exit code.
func startCmd(t *testing.T, args ...string) (*syncBuffer, *syncBuffer, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &out, &errOut, noEnv) }()
	var once sync.Once
	code := -1
	stop := func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(15 * time.Second):
				t.Error("command did not stop within 15s of cancellation")
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	return &out, &errOut, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDemoWorksAsPrinted runs `blitzscale demo` and uses what it prints: the
// address, the curl payloads and the OpenAI SDK base URL.
func TestDemoWorksAsPrinted(t *testing.T) {
	out, stderr, stop := startCmd(t, "demo", "--listen", "127.0.0.1:0")
	addrRE := regexp.MustCompile(`base_url="http://(127\.0\.0\.1:\d+)/v1"`)
	waitFor(t, "the demo banner", func() bool { return addrRE.MatchString(out.String()) })
	banner := out.String()
	addr := addrRE.FindStringSubmatch(banner)[1]
	base := "http://" + addr
	waitFor(t, "readiness", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	payloads := regexp.MustCompile(`-d '([^']+)'`).FindAllStringSubmatch(banner, -1)
	if len(payloads) != 2 {
		t.Fatalf("banner has %d curl payloads, want 2:\n%s", len(payloads), banner)
	}
	for _, p := range payloads {
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(p[1]))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Blitz-Instance") == "" {
			t.Fatalf("printed curl payload %s: %d %s", p[1], resp.StatusCode, body)
		}
		if strings.Contains(p[1], `"stream":true`) && !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
			t.Errorf("streaming payload did not end with [DONE]: %q", body)
		}
	}

	client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx := context.Background()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "llama-3.1-8b",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello")},
	})
	var content strings.Builder
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || content.Len() == 0 {
		t.Fatalf("SDK stream: err %v, content %q", err, content.String())
	}
	models, err := client.Models.List(ctx)
	if err != nil || len(models.Data) != 2 {
		t.Fatalf("models: %v %+v", err, models)
	}

	code, status, _ := runCmd(t, "status", "--sidecar", base)
	if code != 0 || !strings.Contains(status, "gpu-a-0") || !strings.Contains(status, "routable") {
		t.Errorf("status exit %d:\n%s", code, status)
	}
	code, raw, _ := runCmd(t, "status", "--sidecar", base, "--json")
	var st struct{ Instances []json.RawMessage }
	if code != 0 || json.Unmarshal([]byte(raw), &st) != nil || len(st.Instances) != 3 {
		t.Errorf("status --json exit %d: %s", code, raw)
	}
	if code := stop(); code != 0 {
		t.Errorf("demo exit code %d after Ctrl-C, want 0; stderr:\n%s", code, stderr.String())
	}
}

// TestSidecarFollowsStaticFile runs `blitzscale sidecar` on a static file that
// points at a real simulated engine, from env and a config file.
func TestSidecarFollowsStaticFile(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{ID: "e1", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	engine := httptest.NewServer(sim)
	t.Cleanup(engine.Close)
	file := writeFile(t, "instances.yaml", fmt.Sprintf("- id: e1\n  address: %s\n  models: [m]\n", engine.Listener.Addr()))
	port := freePort(t)
	cfg := writeFile(t, "sidecar.yaml", fmt.Sprintf("registry: static\nlisten: 127.0.0.1:%d\nstatic-file: %s\npolicy: least-load\n", port, file))
	_, stderr, stop := startCmd(t, "sidecar", "--config", cfg)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "readiness", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","prompt":"hi","max_tokens":2}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Blitz-Route") != "least-load" {
		t.Errorf("status %d route %q", resp.StatusCode, resp.Header.Get("X-Blitz-Route"))
	}
	if code := stop(); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr.String())
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestConsulTokenFile: the sidecar sends the token from --consul-token-file
// with its Consul queries. The agent here only records what it is sent.
func TestConsulTokenFile(t *testing.T) {
	var mu sync.Mutex
	var tokens []string
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tokens = append(tokens, r.Header.Get("X-Consul-Token"))
		mu.Unlock()
		w.Header().Set("X-Consul-Index", "1")
		http.Error(w, "not a real agent", http.StatusInternalServerError)
	}))
	t.Cleanup(agent.Close)
	token := writeFile(t, "token", "s3cret-token\n")
	startCmd(t, "sidecar", "--registry", "consul", "--consul-addr", agent.URL, "--consul-token-file", token,
		"--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--state-dir", t.TempDir())
	waitFor(t, "a query to the agent", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(tokens) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, got := range tokens {
		if got != "s3cret-token" {
			t.Fatalf("X-Consul-Token = %q, want the file's token", got)
		}
	}
}
