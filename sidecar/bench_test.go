package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/blitzscale/router/routing"
)

// BenchmarkProxy measures the proxy path in-process: ServeHTTP with a
// recorder, over a real loopback connection to a trivial engine that answers
// a small non-streaming request at once. The time includes the loopback
// round trip; allocs/op is the sidecar's plus net/http's client side.
func BenchmarkProxy(b *testing.B) {
	const answer = `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`
	engine := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answer)
	}))
	s := newServer(b, Config{})
	apply(b, s, instance("a", engine, "llama-3.1-8b"))
	const body = `{"model":"llama-3.1-8b","messages":[{"role":"user","content":"Say hi."}],"max_tokens":8}`

	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	rd := strings.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", rd)
	for b.Loop() {
		rd.Reset(body)
		r := req.Clone(req.Context())
		r.Body = io.NopCloser(rd)
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusOK || w.Body.Len() != len(answer) {
			b.Fatalf("status %d body %q", w.Code, w.Body.String())
		}
	}
}

// BenchmarkOpenStreamMemory reports what one open stream costs the sidecar
// in goroutine stacks and live heap: streams are opened to a held engine
// directly and then through the sidecar, and the difference per stream is
// reported (stack-B/stream, heap-B/stream). The handler's stack is the
// figure to watch: it stays at 8 KB only while the proxy's and relay's
// frames stay small (see Server.admit).
func BenchmarkOpenStreamMemory(b *testing.B) {
	const streams = 500
	release := make(chan struct{})
	engine := startBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	s := newServer(b, Config{Routing: routing.Config{MaxInflightPerInstance: -1}})
	apply(b, s, instance("a", engine, "m"))
	front := startBackend(b, s)
	const body = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`

	// open opens n streams to url and returns their stack and heap use.
	open := func(url string) (stack, heap uint64, closeAll func()) {
		client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: streams}}
		var bodies []io.ReadCloser
		for range streams {
			resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Fatalf("open stream: %v %v", resp, err)
			}
			if _, err := resp.Body.Read(make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			bodies = append(bodies, resp.Body)
		}
		var ms goruntime.MemStats
		goruntime.GC()
		goruntime.GC() // the second GC shrinks stacks the first found oversized
		goruntime.ReadMemStats(&ms)
		return ms.StackInuse, ms.HeapAlloc, func() {
			for _, body := range bodies {
				body.Close()
			}
			client.CloseIdleConnections()
		}
	}
	for b.Loop() {
		directStack, directHeap, closeDirect := open(engine.URL)
		closeDirect()
		stack, heap, closeAll := open(front.URL)
		closeAll()
		b.ReportMetric(float64(int64(stack)-int64(directStack))/streams, "stack-B/stream")
		b.ReportMetric(float64(int64(heap)-int64(directHeap))/streams, "heap-B/stream")
	}
}
