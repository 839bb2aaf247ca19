package llmsim

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no models", func(c *Config) { c.Models = nil }, "llmsim: models: at least one model is required"},
		{"empty model", func(c *Config) { c.Models = []string{" "} }, "llmsim: models: model id must not be empty"},
		{"duplicate model", func(c *Config) { c.Models = []string{"a", "a"} }, "llmsim: models: duplicate model id a"},
		{"control id", func(c *Config) { c.ID = "a\nb" }, "llmsim: id: must not contain control characters"},
		{"ttft", func(c *Config) { c.TTFT = -1 }, "llmsim: ttft: must be >= 0"},
		{"itl", func(c *Config) { c.ITL = -1 }, "llmsim: itl: must be >= 0"},
		{"max concurrency", func(c *Config) { c.MaxConcurrency = -1 }, "llmsim: max-concurrency: must be >= 0"},
		{"max queue", func(c *Config) { c.MaxQueue = -1 }, "llmsim: max-queue: must be >= 0"},
		{"prefix cache blocks", func(c *Config) { c.PrefixCacheBlocks = -1 }, "llmsim: prefix-cache-blocks: must be >= 0"},
		{"block size", func(c *Config) { c.BlockSize = -1 }, "llmsim: block-size: must be >= 0"},
		{"default max tokens", func(c *Config) { c.DefaultMaxTokens = -1 }, "llmsim: default-max-tokens: must be >= 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Models: []string{"m"}}
			tt.mod(&cfg)
			err := cfg.Validate()
			_, newErr := New(cfg)
			if tt.want == "" {
				if err != nil || newErr != nil {
					t.Fatalf("Validate = %v, New = %v; want nil", err, newErr)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Validate = %v; want %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) || !errors.Is(newErr, ErrInvalidConfig) {
				t.Errorf("errors.Is(ErrInvalidConfig) = false (Validate %v, New %v)", err, newErr)
			}
			if _, ok := errors.AsType[*FieldError](err); !ok {
				t.Errorf("error %v is not a *FieldError", err)
			}
		})
	}
}

func TestNewAppliesDefaults(t *testing.T) {
	s, err := New(Config{Models: []string{"m"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ID: DefaultID, Models: []string{"m"}, TTFT: DefaultTTFT, ITL: DefaultITL,
		MaxConcurrency: DefaultMaxConcurrency, PrefixCacheBlocks: DefaultPrefixCacheBlocks,
		BlockSize: DefaultBlockSize, DefaultMaxTokens: DefaultMaxTokens,
	}
	if diff := cmp.Diff(want, s.Config()); diff != "" {
		t.Errorf("Config() mismatch (-want +got):\n%s", diff)
	}
}

// ignoreVolatile ignores ids and timestamps, which are checked apart.
var ignoreVolatile = cmpopts.IgnoreFields(chatCompletion{}, "ID", "Created")

func TestChatCompletion(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	tests := []struct {
		name   string
		body   string
		msgs   []chatMessage
		tokens int
	}{
		{"string content, default length", `{"model":"m1","messages":[{"role":"user","content":"hello"}]}`,
			[]chatMessage{{Role: "user", Content: "hello"}}, DefaultMaxTokens},
		{"content parts, max_tokens", `{"model":"m1","max_tokens":3,"messages":[{"role":"system","content":null},{"role":"user","content":[{"type":"text","text":"hel"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"lo"}]}]}`,
			[]chatMessage{{Role: "system"}, {Role: "user", Content: "hello"}}, 3},
		{"max_completion_tokens wins", `{"model":"m2","max_tokens":9,"max_completion_tokens":2,"messages":[{"role":"user","content":"hi"}]}`,
			[]chatMessage{{Role: "user", Content: "hi"}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, srv, http.MethodPost, "/v1/chat/completions", tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			var got chatCompletion
			decodeJSON(t, b, &got)
			prompt := chatPromptText(tt.msgs)
			var model struct{ Model string }
			decodeJSON(t, []byte(tt.body), &model)
			want := chatCompletion{
				Object: "chat.completion", Model: model.Model,
				Choices: []chatChoice{{
					Message:      assistantOutput{Role: "assistant", Content: strings.Join(outputTokens(7, prompt, tt.tokens), "")},
					FinishReason: "length",
				}},
				Usage: newUsage(promptTokens(prompt), tt.tokens),
			}
			if diff := cmp.Diff(want, got, ignoreVolatile); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Created == 0 {
				t.Errorf("id %q, created %d; want chatcmpl- prefix and a timestamp", got.ID, got.Created)
			}
			if id := resp.Header.Get(HeaderID); id != "t1" {
				t.Errorf("%s = %q; want t1", HeaderID, id)
			}
			if !strings.Contains(string(b), `"logprobs":null`) {
				t.Errorf("body %s lacks \"logprobs\":null", b)
			}
		})
	}
}

func TestTextCompletion(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	tests := []struct {
		name    string
		body    string
		prompts []string
		tokens  int
	}{
		{"string prompt", `{"model":"m1","prompt":"once upon a time","max_tokens":4}`, []string{"once upon a time"}, 4},
		{"array prompt", `{"model":"m1","prompt":["a","bcdefgh"],"max_tokens":2}`, []string{"a", "bcdefgh"}, 2},
		{"token ids", `{"model":"m1","prompt":[1,2,3],"max_tokens":1}`, []string{tokenText([]int64{1, 2, 3})}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, srv, http.MethodPost, "/v1/completions", tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			var got textCompletion
			decodeJSON(t, b, &got)
			finish := "length"
			want := textCompletion{Object: "text_completion", Model: "m1", Usage: &usage{}}
			for i, p := range tt.prompts {
				want.Choices = append(want.Choices, textChoice{Index: i, Text: strings.Join(outputTokens(7, p, tt.tokens), ""), FinishReason: &finish})
				want.Usage.PromptTokens += promptTokens(p)
				want.Usage.CompletionTokens += tt.tokens
			}
			want.Usage.TotalTokens = want.Usage.PromptTokens + want.Usage.CompletionTokens
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(textCompletion{}, "ID", "Created")); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if !strings.HasPrefix(got.ID, "cmpl-") {
				t.Errorf("id %q; want cmpl- prefix", got.ID)
			}
		})
	}
}

func TestEmbeddings(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	type result struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Model string `json:"model"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	fetch := func(t *testing.T, body string) result {
		t.Helper()
		resp, b := do(t, srv, http.MethodPost, "/v1/embeddings", body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		var r result
		decodeJSON(t, b, &r)
		return r
	}
	floats := fetch(t, `{"model":"m2","input":["hello world","hello world","other"]}`)
	if floats.Object != "list" || floats.Model != "m2" || len(floats.Data) != 3 {
		t.Fatalf("got object %q model %q with %d vectors; want list m2 3", floats.Object, floats.Model, len(floats.Data))
	}
	if want := 2*promptTokens("hello world") + promptTokens("other"); floats.Usage.PromptTokens != want || floats.Usage.TotalTokens != want {
		t.Errorf("usage %+v; want %d prompt and total tokens", floats.Usage, want)
	}
	vecs := make([][]float32, 3)
	for i, d := range floats.Data {
		if d.Object != "embedding" || d.Index != i {
			t.Errorf("data[%d]: object %q index %d", i, d.Object, d.Index)
		}
		decodeJSON(t, d.Embedding, &vecs[i])
		var norm float64
		for _, x := range vecs[i] {
			norm += float64(x) * float64(x)
		}
		if len(vecs[i]) != embeddingDim || math.Abs(norm-1) > 1e-5 {
			t.Errorf("data[%d]: %d dims, norm² %v; want %d dims, unit length", i, len(vecs[i]), norm, embeddingDim)
		}
	}
	if !cmp.Equal(vecs[0], vecs[1]) || cmp.Equal(vecs[0], vecs[2]) {
		t.Errorf("equal texts must give equal vectors and different texts different ones: %v", vecs)
	}

	b64 := fetch(t, `{"model":"m2","input":"hello world","encoding_format":"base64"}`)
	var s string
	decodeJSON(t, b64.Data[0].Embedding, &s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 4*embeddingDim {
		t.Fatalf("base64 embedding %q: %v, %d bytes", s, err, len(raw))
	}
	got := make([]float32, embeddingDim)
	for i := range got {
		got[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	if diff := cmp.Diff(vecs[0], got); diff != "" {
		t.Errorf("base64 vector differs from float vector (-float +base64):\n%s", diff)
	}
}

func TestModels(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	resp, b := do(t, srv, http.MethodGet, "/v1/models", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got modelList
	decodeJSON(t, b, &got)
	want := modelList{Object: "list", Data: []modelCard{
		{ID: "m1", Object: "model", OwnedBy: "llmsim"},
		{ID: "m2", Object: "model", OwnedBy: "llmsim"},
	}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(modelCard{}, "Created")); diff != "" {
		t.Errorf("models mismatch (-want +got):\n%s", diff)
	}
}

func TestErrors(t *testing.T) {
	s, srv := startSim(t, fastConfig())
	tests := []struct {
		name, method, path, body string
		status                   int
		typ, code, param         string // "" = null
	}{
		{"bad json", "POST", "/v1/chat/completions", `{"model":`, 400, "invalid_request_error", "invalid_request_error", ""},
		{"wrong field type", "POST", "/v1/chat/completions", `{"model":"m1","stream":"yes","messages":[]}`, 400, "invalid_request_error", "invalid_request_error", ""},
		{"missing model", "POST", "/v1/completions", `{"prompt":"x"}`, 400, "invalid_request_error", "invalid_request_error", "model"},
		{"unknown model", "POST", "/v1/chat/completions", `{"model":"nope","messages":[{"role":"user","content":"x"}]}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"unknown model embeddings", "POST", "/v1/embeddings", `{"model":"nope","input":"x"}`, 404, "invalid_request_error", "model_not_found", "model"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"m1","messages":[]}`, 400, "invalid_request_error", "invalid_request_error", "messages"},
		{"no prompt", "POST", "/v1/completions", `{"model":"m1"}`, 400, "invalid_request_error", "invalid_request_error", "prompt"},
		{"bad content", "POST", "/v1/chat/completions", `{"model":"m1","messages":[{"role":"user","content":7}]}`, 400, "invalid_request_error", "invalid_request_error", ""},
		{"zero max_tokens", "POST", "/v1/completions", `{"model":"m1","prompt":"x","max_tokens":0}`, 400, "invalid_request_error", "invalid_request_error", "max_tokens"},
		{"huge max_tokens", "POST", "/v1/chat/completions", `{"model":"m1","max_tokens":1e9,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "invalid_request_error", ""},
		{"too many max_tokens", "POST", "/v1/chat/completions", `{"model":"m1","max_completion_tokens":2000000,"messages":[{"role":"user","content":"x"}]}`, 400, "invalid_request_error", "invalid_request_error", "max_completion_tokens"},
		{"bad encoding", "POST", "/v1/embeddings", `{"model":"m1","input":"x","encoding_format":"hex"}`, 400, "invalid_request_error", "invalid_request_error", "encoding_format"},
		{"unknown path", "GET", "/v2/nothing", "", 404, "invalid_request_error", "not_found", ""},
		{"wrong method", "GET", "/v1/chat/completions", "", 405, "invalid_request_error", "method_not_allowed", ""},
	}
	inference := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := do(t, srv, tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (%s)", resp.StatusCode, tt.status, b)
			}
			if got := resp.Header.Get(HeaderID); got != "t1" {
				t.Errorf("%s = %q; want t1", HeaderID, got)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var e errorBody
			decodeJSON(t, b, &e)
			if e.Error.Message == "" || e.Error.Type != tt.typ || deref(e.Error.Code) != tt.code || deref(e.Error.Param) != tt.param {
				t.Errorf("error %s; want type %q code %q param %q", b, tt.typ, tt.code, tt.param)
			}
		})
		if tt.method == "POST" {
			inference++
		}
	}
	if got := s.Stats(); got.Requests != int64(inference) || got.Errors != int64(inference) {
		t.Errorf("stats %+v; want %d requests, all errors", got, inference)
	}
	if resp, _ := do(t, srv, "DELETE", "/sim/faults", ""); resp.Header.Get("Allow") != "GET, POST" {
		t.Errorf("Allow = %q; want \"GET, POST\"", resp.Header.Get("Allow"))
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func TestOutputIsDeterministic(t *testing.T) {
	a := outputTokens(1, "prompt", 8)
	if !cmp.Equal(a, outputTokens(1, "prompt", 8)) {
		t.Error("same seed and prompt gave different output")
	}
	if cmp.Equal(a, outputTokens(2, "prompt", 8)) && cmp.Equal(a, outputTokens(1, "other", 8)) {
		t.Error("output ignores seed and prompt")
	}
	if got := outputText(1, "prompt", 8); got != strings.Join(a, "") {
		t.Errorf("outputText = %q; want the streamed tokens %q", got, a)
	}
	for i, tok := range a {
		if !strings.HasPrefix(tok, " ") || len(tok) < 2 {
			t.Errorf("token %d = %q; want a space and a word", i, tok)
		}
	}
	if got := promptTokens(""); got != 1 {
		t.Errorf("promptTokens(\"\") = %d; want 1", got)
	}
	if got := promptTokens(strconv.Itoa(12345678)); got != 2 {
		t.Errorf("promptTokens(8 bytes) = %d; want 2", got)
	}
}
