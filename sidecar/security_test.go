package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
)

// lockedBuffer collects logs written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsNeverHoldSecretsOrPrompts drives successes and every failure path
// at debug level and checks the log for the client's token, the prompt and
// the completion.
func TestLogsNeverHoldSecretsOrPrompts(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sim, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	sc := newSidecar(t, Config{Logger: logger, UpstreamAPIKey: "upstream-key-777"},
		instance("e", srv, "m"), discovery.Instance{ID: "dead", Address: deadAddr(t), Models: []string{"m"}})
	const prompt = "my-secret-prompt-123"
	for range 4 {
		resp, body := sc.post(t, "/v1/chat/completions", `{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"`+prompt+`"}]}`,
			"Authorization", "Bearer client-token-456")
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	sim.SetFaults(llmsim.Faults{FailMidStream: 2})
	sc.post(t, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"`+prompt+`"}]}`, "Authorization", "Bearer client-token-456")
	sim.SetFaults(llmsim.Faults{ErrorRatio: 1})
	sc.post(t, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"`+prompt+`"}]}`, "Authorization", "Bearer client-token-456")
	out := logs.String()
	for _, secret := range []string{"client-token-456", "upstream-key-777", prompt, "Authorization"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "upstream") {
		t.Errorf("the failure paths logged nothing, so the test proves nothing:\n%s", out)
	}
}

func TestHeaderCountLimit(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}})
	sc := newSidecar(t, Config{MaxHeaderCount: 10}, instance("e", srv, "m"))
	var hdr []string
	for i := range 20 {
		hdr = append(hdr, fmt.Sprintf("X-Pad-%d", i), "1")
	}
	resp, body := sc.post(t, "/v1/completions", `{"model":"m","prompt":"x"}`, hdr...)
	checkAPIError(t, resp, body, 431, "invalid_request_error", "request_header_fields_too_large")
}

// TestSlowBodyTimesOut: a client that sends headers then trickles nothing
// of its promised body gets 408 at the body deadline.
func TestSlowBodyTimesOut(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}})
	sc := newSidecar(t, Config{BodyReadTimeout: 100 * time.Millisecond}, instance("e", srv, "m"))
	conn, err := net.Dial("tcp", strings.TrimPrefix(sc.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":")
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(conn)
	if !strings.HasPrefix(string(got), "HTTP/1.1 408") || !strings.Contains(string(got), "request_timeout") {
		t.Errorf("slow body answered:\n%s", got)
	}
}

// TestHeaderBytesLimit runs the real server (Run) so its MaxHeaderBytes
// applies: oversized headers are refused before any handler runs.
func TestHeaderBytesLimit(t *testing.T) {
	s := newServer(t, Config{MaxHeaderBytes: 4 << 10})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 16<<10))
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KB of headers against a 4 KB limit: %d, want 431", resp.StatusCode)
	}
}
