package loadgen

import (
	"encoding/json"
	"strconv"
	"strings"
)

// bodyMaker builds request bodies from a head and tail made once, so that a
// request costs one small allocation and no JSON encoding.
type bodyMaker struct {
	head, tail []byte
	filler     string // prompt text, PromptBytes long
	unique     bool
}

// filler words: plain ASCII that needs no JSON escaping.
const fillerWords = "the quick brown fox jumps over the lazy dog "

func newBodyMaker(c Config) *bodyMaker {
	model, _ := json.Marshal(c.Model) // a string always encodes
	filler := strings.Repeat(fillerWords, c.PromptBytes/len(fillerWords)+1)[:c.PromptBytes]
	var head, tail string
	if c.Endpoint == EndpointCompletions {
		head = `{"model":` + string(model) + `,"prompt":"`
		tail = `"`
	} else {
		head = `{"model":` + string(model) + `,"messages":[{"role":"user","content":"`
		tail = `"}]`
	}
	tail += `,"max_tokens":` + strconv.Itoa(c.MaxTokens)
	if c.Stream {
		// Usage in the last chunk, as most SDK users ask for it; the reader
		// knows that chunk is no token.
		tail += `,"stream":true,"stream_options":{"include_usage":true}`
	}
	tail += "}"
	return &bodyMaker{head: []byte(head), tail: []byte(tail), filler: filler, unique: !c.SamePrompt}
}

// body returns the body of request n. A unique prompt starts with n and
// keeps its length by cutting the filler.
func (m *bodyMaker) body(n uint64) []byte {
	b := make([]byte, 0, len(m.head)+len(m.filler)+len(m.tail)+21)
	b = append(b, m.head...)
	filler := m.filler
	if m.unique {
		start := len(b)
		b = strconv.AppendUint(b, n, 10)
		b = append(b, ' ')
		filler = filler[min(len(filler), len(b)-start):]
	}
	b = append(b, filler...)
	return append(b, m.tail...)
}

// path is the request path under a base URL.
func path(endpoint string) string {
	if endpoint == EndpointCompletions {
		return "/completions"
	}
	return "/chat/completions"
}
