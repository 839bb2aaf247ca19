package llmsim

import "encoding/json"

// finishLength is the only finish reason: the simulator always generates
// exactly the requested number of tokens.
const finishLength = "length"

// nullJSON marks a chunk's usage as present but null.
var nullJSON = json.RawMessage("null")

// response builds the bodies of one generation.
type response struct {
	gen     *generation
	id      string
	created int64
	seed    int64
	tokens  []*tokenSource // one per choice, for streaming
	usage   usage
}

// text is the whole output of choice, for non-streaming bodies.
func (r *response) text(choice int) string {
	return outputText(r.seed, r.gen.prompts[choice], r.gen.maxTokens)
}

// whole is the non-streaming body.
func (r *response) whole() any {
	finish := finishLength
	if r.gen.chat {
		return chatCompletion{
			ID: r.id, Object: "chat.completion", Created: r.created, Model: r.gen.model,
			Choices: []chatChoice{{
				Message:      assistantOutput{Role: "assistant", Content: r.text(0)},
				FinishReason: finish,
			}},
			Usage: r.usage,
		}
	}
	choices := make([]textChoice, len(r.gen.prompts))
	for i := range choices {
		choices[i] = textChoice{Index: i, Text: r.text(i), FinishReason: &finish}
	}
	return textCompletion{
		ID: r.id, Object: "text_completion", Created: r.created, Model: r.gen.model,
		Choices: choices, Usage: &r.usage,
	}
}

// chunkUsage is the usage field of a non-final chunk: null when the client
// asked for usage, absent otherwise.
func (r *response) chunkUsage() json.RawMessage {
	if r.gen.includeUsage {
		return nullJSON
	}
	return nil
}

// roleChunk opens a chat stream with the assistant role and empty content,
// as vLLM and OpenAI do.
func (r *response) roleChunk() any {
	return chatChunk{
		ID: r.id, Object: "chat.completion.chunk", Created: r.created, Model: r.gen.model,
		Choices: []chunkChoice{{Delta: delta{Role: "assistant"}}},
		Usage:   r.chunkUsage(),
	}
}

// tokenChunk carries the next token of choice; the last step has the
// finish reason.
func (r *response) tokenChunk(choice, step int) any {
	var finish *string
	if step == r.gen.maxTokens-1 {
		s := finishLength
		finish = &s
	}
	tok := r.tokens[choice].next()
	if r.gen.chat {
		return chatChunk{
			ID: r.id, Object: "chat.completion.chunk", Created: r.created, Model: r.gen.model,
			Choices: []chunkChoice{{Index: choice, Delta: delta{Content: tok}, FinishReason: finish}},
			Usage:   r.chunkUsage(),
		}
	}
	return completionChunk{
		ID: r.id, Object: "text_completion", Created: r.created, Model: r.gen.model,
		Choices: []textChoice{{Index: choice, Text: tok, FinishReason: finish}},
		Usage:   r.chunkUsage(),
	}
}

// usageChunk is the final chunk of stream_options.include_usage: no
// choices, the usage of the whole request.
func (r *response) usageChunk() any {
	u, _ := json.Marshal(r.usage) // a struct of ints cannot fail to encode
	if r.gen.chat {
		return chatChunk{
			ID: r.id, Object: "chat.completion.chunk", Created: r.created, Model: r.gen.model,
			Choices: []chunkChoice{}, Usage: u,
		}
	}
	return completionChunk{
		ID: r.id, Object: "text_completion", Created: r.created, Model: r.gen.model,
		Choices: []textChoice{}, Usage: u,
	}
}
