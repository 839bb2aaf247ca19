package loadgen

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name, data string
		want       eventKind
	}{
		{"done", `[DONE]`, evDone},
		{"chat token", `{"id":"x","choices":[{"index":0,"delta":{"content":" hi"},"finish_reason":null}]}`, evToken},
		{"role chunk", `{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`, evEmpty},
		{"null content", `{"choices":[{"delta":{"content":null}}]}`, evEmpty},
		{"spaced", `{"choices": [{"delta": {"content": "x"}}]}`, evToken},
		{"completion token", `{"object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}`, evToken},
		{"empty text", `{"choices":[{"text":""}]}`, evEmpty},
		{"usage chunk", `{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}`, evUsage},
		{"tool call", `{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}`, evToken},
		{"error event", `{"error":{"message":"boom","type":"upstream_error"}}`, evError},
		{"vllm error", `{"object":"error","message":"boom"}`, evError},
		{"escaped quote in token", `{"choices":[{"delta":{"content":"\"content\":\"\""}}]}`, evToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify([]byte(tt.data)); got != tt.want {
				t.Errorf("classify(%s) = %d; want %d", tt.data, got, tt.want)
			}
		})
	}
}

// clock returns a now func that advances by step on each call.
func clock(step time.Duration) func() time.Time {
	t := time.Unix(0, 0)
	return func() time.Time { t = t.Add(step); return t }
}

func TestReadStream(t *testing.T) {
	long := `{"choices":[{"delta":{"content":"` + strings.Repeat("x", 300) + `"}}]}`
	stream := ": keep-alive comment\n\n" +
		"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n" +
		"event: message\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n" +
		"data: " + long + "\n\n" +
		"data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{}}\n\n" +
		"data: [DONE]\n\n"
	var st streamStats
	// A buffer smaller than the long line, to exercise skipping its tail.
	br := bufio.NewReaderSize(strings.NewReader(stream), 64)
	if err := readStream(br, clock(time.Millisecond), &st); err != nil {
		t.Fatal(err)
	}
	if !st.done || st.failed || st.tokens != 3 || len(st.itl) != 2 {
		t.Errorf("done %v failed %v tokens %d gaps %d; want done, 3 tokens, 2 gaps", st.done, st.failed, st.tokens, len(st.itl))
	}
	if st.first != time.Unix(0, 0).Add(2*time.Millisecond) {
		t.Errorf("first token at %v; want the second data event's time", st.first)
	}
}

func TestReadStreamTruncated(t *testing.T) {
	var st streamStats
	br := bufio.NewReader(strings.NewReader("data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"cho"))
	if err := readStream(br, time.Now, &st); err != nil {
		t.Fatal(err)
	}
	if st.done || st.tokens != 2 {
		t.Errorf("done %v tokens %d; want not done (the partial line counts as read)", st.done, st.tokens)
	}
}

func TestBody(t *testing.T) {
	for _, c := range []Config{
		{Model: `m"1`, MaxTokens: 7, PromptBytes: 100, Endpoint: EndpointChat, Stream: true},
		{Model: "m", MaxTokens: 1, PromptBytes: 3, Endpoint: EndpointCompletions},
		{Model: "m", MaxTokens: 1, PromptBytes: 100, Endpoint: EndpointChat, SamePrompt: true},
	} {
		m := newBodyMaker(c)
		var got struct {
			Model    string `json:"model"`
			Prompt   string `json:"prompt"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
			MaxTokens int  `json:"max_tokens"`
			Stream    bool `json:"stream"`
		}
		b := m.body(12345)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		prompt := got.Prompt
		if c.Endpoint == EndpointChat {
			prompt = got.Messages[0].Content
		}
		wantLen := c.PromptBytes
		if !c.SamePrompt {
			wantLen = max(wantLen, len("12345 "))
		}
		if got.Model != c.Model || got.MaxTokens != c.MaxTokens || got.Stream != c.Stream || len(prompt) != wantLen {
			t.Errorf("body %s: model %q max_tokens %d stream %v prompt %d bytes", b, got.Model, got.MaxTokens, got.Stream, len(prompt))
		}
		if !c.SamePrompt && !strings.HasPrefix(prompt, "12345 ") {
			t.Errorf("prompt %q does not start with the request number", prompt)
		}
	}
}

func TestCompletionTokens(t *testing.T) {
	for b, want := range map[string]int64{
		`{"usage":{"prompt_tokens":3,"completion_tokens":42,"total_tokens":45}}`: 42,
		`{"usage":{"completion_tokens": 7}}`:                                     7,
		`{"choices":[]}`:                                                         0,
	} {
		if got := completionTokens([]byte(b)); got != want {
			t.Errorf("completionTokens(%s) = %d; want %d", b, got, want)
		}
	}
}

func TestFormatMicros(t *testing.T) {
	for v, want := range map[float64]string{12.4: "12µs", 1234: "1.23ms", 2.5e6: "2.50s"} {
		if got := FormatMicros(v); got != want {
			t.Errorf("FormatMicros(%v) = %q; want %q", v, got, want)
		}
	}
}
