package llmsim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// streamChunk decodes chat and completion chunks alike.
type streamChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

// summary reduces a chunk to one comparable line.
func (c streamChunk) summary() string {
	if len(c.Choices) == 0 {
		if c.Usage == nil {
			return c.Object + " empty"
		}
		b, _ := json.Marshal(c.Usage)
		return c.Object + " usage " + string(b)
	}
	ch := c.Choices[0]
	s := c.Object
	if ch.Delta != nil {
		if ch.Delta.Role != "" {
			s += " role=" + ch.Delta.Role
		}
		if ch.Delta.Content != nil {
			s += " content=" + *ch.Delta.Content
		}
	}
	if ch.Text != nil {
		s += " text=" + *ch.Text
	}
	if ch.FinishReason != nil {
		s += " finish=" + *ch.FinishReason
	}
	return s
}

func TestStreaming(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	chatPrompt := chatPromptText([]chatMessage{{Role: "user", Content: "hi"}})
	chatToks := outputTokens(7, chatPrompt, 3)
	compToks := outputTokens(7, "abc", 2)
	chatUsage := `{"prompt_tokens":` + itoa(promptTokens(chatPrompt)) + `,"completion_tokens":3,"total_tokens":` + itoa(promptTokens(chatPrompt)+3) + `}`
	tests := []struct {
		name, path, body string
		want             []string
		usageKey         string // "absent" or "null" on non-final chunks
	}{
		{
			name: "chat", path: "/v1/chat/completions",
			body: `{"model":"m1","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
			want: []string{
				"chat.completion.chunk role=assistant content=",
				"chat.completion.chunk content=" + chatToks[0],
				"chat.completion.chunk content=" + chatToks[1],
				"chat.completion.chunk content=" + chatToks[2] + " finish=length",
				"[DONE]",
			},
			usageKey: "absent",
		},
		{
			name: "chat include_usage", path: "/v1/chat/completions",
			body: `{"model":"m1","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
			want: []string{
				"chat.completion.chunk role=assistant content=",
				"chat.completion.chunk content=" + chatToks[0],
				"chat.completion.chunk content=" + chatToks[1],
				"chat.completion.chunk content=" + chatToks[2] + " finish=length",
				"chat.completion.chunk usage " + chatUsage,
				"[DONE]",
			},
			usageKey: "null",
		},
		{
			name: "completion include_usage", path: "/v1/completions",
			body: `{"model":"m2","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"prompt":"abc"}`,
			want: []string{
				"text_completion text=" + compToks[0],
				"text_completion text=" + compToks[1] + " finish=length",
				`text_completion usage {"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`,
				"[DONE]",
			},
			usageKey: "null",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := open(t, context.Background(), srv, http.MethodPost, tt.path, tt.body)
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
				t.Fatalf("status %d, Content-Type %q", resp.StatusCode, ct)
			}
			events, err := newEventReader(resp.Body).all()
			if err != nil {
				t.Fatalf("reading stream: %v", err)
			}
			var got []string
			ids := map[string]bool{}
			for _, ev := range events {
				if ev == "[DONE]" {
					got = append(got, ev)
					continue
				}
				var c streamChunk
				decodeJSON(t, []byte(ev), &c)
				got = append(got, c.summary())
				ids[c.ID] = true
				final := len(c.Choices) == 0
				switch {
				case final:
				case tt.usageKey == "null" && !strings.Contains(ev, `"usage":null`):
					t.Errorf("chunk %s: want \"usage\":null", ev)
				case tt.usageKey == "absent" && strings.Contains(ev, `"usage"`):
					t.Errorf("chunk %s: want no usage key", ev)
				}
				if final && !strings.Contains(ev, `"choices":[]`) {
					t.Errorf("usage chunk %s: want \"choices\":[]", ev)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("chunks mismatch (-want +got):\n%s", diff)
			}
			if len(ids) != 1 {
				t.Errorf("chunks carry %d ids; want one", len(ids))
			}
		})
	}
}

func TestStreamingMultiplePrompts(t *testing.T) {
	_, srv := startSim(t, fastConfig())
	resp := open(t, context.Background(), srv, http.MethodPost, "/v1/completions", `{"model":"m1","stream":true,"max_tokens":2,"prompt":["a","b"]}`)
	defer resp.Body.Close()
	events, err := newEventReader(resp.Body).all()
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, ev := range events[:len(events)-1] {
		var c streamChunk
		decodeJSON(t, []byte(ev), &c)
		got = append(got, c.Choices[0].Index)
	}
	if diff := cmp.Diff([]int{0, 1, 0, 1}, got); diff != "" {
		t.Errorf("choice indexes per chunk (-want +got):\n%s", diff)
	}
}

// TestStreamIsNotBuffered proves tokens leave when generated: the first
// event arrives well before the rest of the stream.
func TestStreamIsNotBuffered(t *testing.T) {
	cfg := fastConfig()
	cfg.ITL = 200 * time.Millisecond
	_, srv := startSim(t, cfg)
	resp := open(t, context.Background(), srv, http.MethodPost, "/v1/completions", `{"model":"m1","stream":true,"max_tokens":3,"prompt":"x"}`)
	defer resp.Body.Close()
	er := newEventReader(resp.Body)
	if _, err := er.next(); err != nil {
		t.Fatalf("first event: %v", err)
	}
	first := time.Now()
	rest, err := er.all()
	if err != nil {
		t.Fatalf("rest of stream: %v", err)
	}
	// Two more tokens follow at 200ms intervals; a buffered stream would
	// deliver them together with the first.
	if gap := time.Since(first); gap < 300*time.Millisecond {
		t.Errorf("rest of stream arrived %v after the first event; want >= 300ms", gap)
	}
	if len(rest) != 3 || rest[2] != "[DONE]" {
		t.Errorf("rest = %q; want two tokens and [DONE]", rest)
	}
}

// TestStreamHeadersBeforeFirstToken checks the vLLM behaviour of sending
// headers on admission, before the first token.
func TestStreamHeadersBeforeFirstToken(t *testing.T) {
	cfg := fastConfig()
	cfg.TTFT = time.Hour
	s, srv := startSim(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	resp := open(t, ctx, srv, http.MethodPost, "/v1/completions", `{"model":"m1","stream":true,"prompt":"x"}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderPrefixHitBlocks) != "0" {
		t.Errorf("status %d, %s %q; want 200 and 0", resp.StatusCode, HeaderPrefixHitBlocks, resp.Header.Get(HeaderPrefixHitBlocks))
	}
	cancel()
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitFor(t, "cancellation to be counted", func() bool { return s.Stats().Cancelled == 1 })
}

func TestCancellationIsCounted(t *testing.T) {
	tests := []struct {
		name, path, body string
	}{
		{"running stream", "/v1/chat/completions", `{"model":"m1","stream":true,"max_tokens":100000,"messages":[{"role":"user","content":"x"}]}`},
		{"running non-stream", "/v1/completions", `{"model":"m1","max_tokens":100000,"prompt":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.ITL = time.Millisecond
			s, srv := startSim(t, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+tt.path, strings.NewReader(tt.body))
				resp, err := srv.Client().Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done <- err
			}()
			waitFor(t, "the request to run", func() bool { return s.Stats().Running == 1 })
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("client error = %v; want context.Canceled", err)
			}
			waitFor(t, "cancellation to be counted", func() bool {
				st := s.Stats()
				return st.Cancelled == 1 && st.Running == 0
			})
			if st := s.Stats(); st.Completed != 0 || st.Errors != 0 {
				t.Errorf("stats %+v; want only a cancellation", st)
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
