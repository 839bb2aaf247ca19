package llmsim

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Request bodies. Only the fields the simulator acts on are decoded; the
// rest (temperature, tools, n, ...) is accepted and ignored.

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
}

type completionRequest struct {
	Model         string         `json:"model"`
	Prompt        promptInput    `json:"prompt"`
	MaxTokens     *int           `json:"max_tokens"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
}

type embeddingRequest struct {
	Model          string      `json:"model"`
	Input          promptInput `json:"input"`
	EncodingFormat string      `json:"encoding_format"`
}

func (r *chatRequest) model() string       { return r.Model }
func (r *completionRequest) model() string { return r.Model }
func (r *embeddingRequest) model() string  { return r.Model }

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatMessage struct {
	Role    string         `json:"role"`
	Content messageContent `json:"content"`
}

// messageContent is a chat message's content: a string, null, or an array
// of parts of which the "text" ones are kept (images and audio are ignored).
type messageContent string

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*c = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = messageContent(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &parts); err != nil {
		return errors.New("content must be a string or an array of content parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			sb.WriteString(p.Text)
		}
	}
	*c = messageContent(sb.String())
	return nil
}

// promptInput is a completion prompt or an embedding input: a string, an
// array of strings, an array of token ids, or an array of token-id arrays.
// Each element becomes one text; token ids become 4 bytes each so that the
// token estimate (bytes/4) counts them exactly.
type promptInput struct {
	texts []string
	set   bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	p.set = true
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		p.texts = []string{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err == nil {
		p.texts = ss
		return nil
	}
	var ids []int64
	if err := json.Unmarshal(b, &ids); err == nil {
		p.texts = []string{tokenText(ids)}
		return nil
	}
	var batches [][]int64
	if err := json.Unmarshal(b, &batches); err == nil {
		for _, ids := range batches {
			p.texts = append(p.texts, tokenText(ids))
		}
		return nil
	}
	return errors.New("must be a string, an array of strings, or an array of token ids")
}

func tokenText(ids []int64) string {
	b := make([]byte, 4*len(ids))
	for i, id := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
	}
	return string(b)
}

// chatPromptText renders messages the way a chat template would, so that
// the role is part of the cached prefix and of the token count.
func chatPromptText(msgs []chatMessage) string {
	var sb strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&sb, "<|%s|>\n%s\n", m.Role, m.Content)
	}
	sb.WriteString("<|assistant|>\n")
	return sb.String()
}

// Response bodies, in the shapes of OpenAI and vLLM.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) usage {
	return usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      assistantOutput `json:"message"`
	Logprobs     *struct{}       `json:"logprobs"` // always null
	FinishReason string          `json:"finish_reason"`
}

type assistantOutput struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type textCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "text_completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []textChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"` // absent in stream chunks
}

type textChoice struct {
	Index        int       `json:"index"`
	Text         string    `json:"text"`
	Logprobs     *struct{} `json:"logprobs"`      // always null
	FinishReason *string   `json:"finish_reason"` // null until the last chunk
}

// chatChunk is one SSE event of a streamed chat completion. Usage is
// omitted unless stream_options.include_usage is set; then it is null on
// every chunk but the last, which has no choices, as OpenAI documents.
type chatChunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"` // "chat.completion.chunk"
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []chunkChoice   `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type chunkChoice struct {
	Index        int       `json:"index"`
	Delta        delta     `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`      // always null
	FinishReason *string   `json:"finish_reason"` // null until the last chunk
}

type delta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

// completionChunk is one SSE event of a streamed text completion; Usage
// follows the same rule as chatChunk's.
type completionChunk struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"` // "text_completion"
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []textChoice    `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type embeddingList struct {
	Object string      `json:"object"` // "list"
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

// embedding.Embedding is a []float32, or a base64 string of little-endian
// float32s when the request asks for encoding_format "base64" (the OpenAI
// Python SDK's default).
type embedding struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"`
}

type modelList struct {
	Object string      `json:"object"` // "list"
	Data   []modelCard `json:"data"`
}

type modelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"` // "model"
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}
