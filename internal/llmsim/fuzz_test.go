package llmsim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeRequests feeds arbitrary bodies to the request decoders: they
// must never panic, and whatever decodes must yield a prompt the engine
// can count and hash. The seed corpus is in testdata/fuzz.
func FuzzDecodeRequests(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`))
	f.Add([]byte(`{"model":"m","prompt":[[1,2],[3]],"input":["a","b"]}`))
	f.Add([]byte(`{"prompt":null,"messages":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var chat chatRequest
		if json.Unmarshal(body, &chat) == nil {
			text := chatPromptText(chat.Messages)
			if promptTokens(text) < 1 {
				t.Fatalf("chat prompt %q has no tokens", text)
			}
			blockHashes(chat.Model, text, 4)
		}
		var comp completionRequest
		if json.Unmarshal(body, &comp) == nil && comp.Prompt.set {
			for _, p := range comp.Prompt.texts {
				blockHashes(comp.Model, p, 4)
			}
		}
	})
}

func BenchmarkPrefixCacheMatch(b *testing.B) {
	c := newPrefixCache(DefaultPrefixCacheBlocks)
	prompt := strings.Repeat("You are a helpful assistant. ", 64) // ~1.8 KiB, 29 blocks
	b.ReportAllocs()
	for b.Loop() {
		c.match(blockHashes("m", prompt, DefaultBlockSize))
	}
}

// BenchmarkChatCompletion measures a whole non-streaming request through
// the handler, without sockets, at near-zero simulated latency.
func BenchmarkChatCompletion(b *testing.B) {
	s, err := New(Config{Models: []string{"m"}, TTFT: time.Nanosecond, ITL: time.Nanosecond})
	if err != nil {
		b.Fatal(err)
	}
	body := `{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"` + strings.Repeat("hello ", 100) + `"}]}`
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
