package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
