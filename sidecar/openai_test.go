package sidecar

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/blitzscale/router/internal/llmsim"
)

// TestOpenAISDK drives the sidecar with the official OpenAI Go SDK, as an
// application would: base URL on the sidecar, nothing else changed.
func TestOpenAISDK(t *testing.T) {
	_, simA := startSim(t, simConfig("sim-a", "llama", "qwen"))
	_, simB := startSim(t, simConfig("sim-b", "llama"))
	broken, simC := startSim(t, simConfig("sim-c", "flaky"))
	broken.SetFaults(llmsim.Faults{FailMidStream: 2})
	sc := newSidecar(t, Config{},
		instance("sim-a", simA, "llama", "qwen"), instance("sim-b", simB, "llama"), instance("sim-c", simC, "flaky"))
	client := openai.NewClient(
		option.WithBaseURL(sc.url+"/v1/"),
		option.WithAPIKey("unused"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(sc.client),
	)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	params := func(model string) openai.ChatCompletionNewParams {
		return openai.ChatCompletionNewParams{
			Model:     model,
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say something about routers.")},
			MaxTokens: openai.Int(6),
		}
	}

	// The simulator's output depends only on its seed and the prompt, so
	// the whole and the streamed answer must agree word for word.
	var whole string
	t.Run("chat", func(t *testing.T) {
		var resp *http.Response
		c, err := client.Chat.Completions.New(ctx, params("llama"), option.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("chat: %v", err)
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == "" || c.Model != "llama" {
			t.Fatalf("chat completion %+v: want one non-empty choice from llama", c)
		}
		if c.Usage.CompletionTokens != 6 {
			t.Errorf("completion tokens = %d, want 6", c.Usage.CompletionTokens)
		}
		if id := resp.Header.Get("X-Blitz-Instance"); id != "sim-a" && id != "sim-b" {
			t.Errorf("X-Blitz-Instance = %q, want sim-a or sim-b", id)
		}
		whole = c.Choices[0].Message.Content
	})
	t.Run("streaming chat", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, params("llama"))
		defer stream.Close()
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			if !acc.AddChunk(stream.Current()) {
				t.Fatalf("chunk %d does not fit the stream", chunks)
			}
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream ended with %v", err)
		}
		if chunks < 6 || len(acc.Choices) != 1 {
			t.Fatalf("got %d chunks and %d choices, want at least 6 and 1", chunks, len(acc.Choices))
		}
		if got := acc.Choices[0].Message.Content; whole != "" && got != whole {
			t.Errorf("streamed content %q, want the non-streamed %q", got, whole)
		}
	})
	t.Run("model list", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatalf("list models: %v", err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if diff := cmp.Diff([]string{"flaky", "llama", "qwen"}, ids); diff != "" {
			t.Errorf("model ids (-want +got):\n%s", diff)
		}
		m, err := client.Models.Get(ctx, "qwen")
		if err != nil || m.ID != "qwen" {
			t.Errorf("get model qwen: %+v, %v", m, err)
		}
	})
	t.Run("error decoding", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, params("gpt-404"))
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
		}
		if apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Type != "invalid_request_error" || apiErr.Param != "model" || apiErr.Message == "" {
			t.Errorf("got status %d code %q type %q param %q message %q; want 404 model_not_found invalid_request_error model",
				apiErr.StatusCode, apiErr.Code, apiErr.Type, apiErr.Param, apiErr.Message)
		}
		stream := client.Chat.Completions.NewStreaming(ctx, params("gpt-404"))
		defer stream.Close()
		for stream.Next() {
		}
		if !errors.As(stream.Err(), &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("streaming an unknown model: %v, want a 404 model_not_found *openai.Error", stream.Err())
		}
	})
	t.Run("broken stream is an error, not a truncation", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, params("flaky"))
		defer stream.Close()
		for stream.Next() {
		}
		if stream.Err() == nil {
			t.Error("a stream the engine broke ended without error in the SDK")
		}
	})
}
