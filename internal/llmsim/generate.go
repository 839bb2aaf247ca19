package llmsim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// generation is a decoded chat or completion request.
type generation struct {
	chat         bool
	model        string
	prompts      []string // one choice per prompt; a chat has exactly one
	maxTokens    int
	stream       bool
	includeUsage bool
}

// tokenLimit is an optional output-length field of a request.
type tokenLimit struct {
	name  string
	value *int
}

// maxOutputTokens bounds a request's output length, as a real engine's
// context length does; it keeps a non-streaming body to a few MiB.
const maxOutputTokens = 1 << 20

// outputLength picks the output length: the first of the given limits that
// is set, else DefaultMaxTokens. A limit below 1 or above maxOutputTokens
// is a client error, as in OpenAI and vLLM.
func (s *Sim) outputLength(limits ...tokenLimit) (int, *apiError) {
	for _, l := range limits {
		if l.value == nil {
			continue
		}
		if *l.value < 1 || *l.value > maxOutputTokens {
			return 0, badRequest(l.name, fmt.Sprintf("%s must be between 1 and %d", l.name, maxOutputTokens))
		}
		return *l.value, nil
	}
	return s.cfg.DefaultMaxTokens, nil
}

// handleChat answers POST /v1/chat/completions.
func (s *Sim) handleChat(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	var req chatRequest
	if e := s.decode(w, r, &req); e != nil {
		s.reject(w, e)
		return
	}
	if len(req.Messages) == 0 {
		s.reject(w, badRequest("messages", "messages must contain at least one message"))
		return
	}
	n, e := s.outputLength(tokenLimit{"max_completion_tokens", req.MaxCompletionTokens}, tokenLimit{"max_tokens", req.MaxTokens})
	if e != nil {
		s.reject(w, e)
		return
	}
	s.generate(w, r, &generation{
		chat:         true,
		model:        req.Model,
		prompts:      []string{chatPromptText(req.Messages)},
		maxTokens:    n,
		stream:       req.Stream,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	})
}

// handleCompletion answers POST /v1/completions. An array prompt gets one
// choice per element, as OpenAI and vLLM batch it.
func (s *Sim) handleCompletion(w http.ResponseWriter, r *http.Request) {
	s.stats.requests.Add(1)
	var req completionRequest
	if e := s.decode(w, r, &req); e != nil {
		s.reject(w, e)
		return
	}
	if !req.Prompt.set || len(req.Prompt.texts) == 0 {
		s.reject(w, badRequest("prompt", "prompt must be a non-empty string or array"))
		return
	}
	n, e := s.outputLength(tokenLimit{"max_tokens", req.MaxTokens})
	if e != nil {
		s.reject(w, e)
		return
	}
	s.generate(w, r, &generation{
		model:        req.Model,
		prompts:      req.Prompt.texts,
		maxTokens:    n,
		stream:       req.Stream,
		includeUsage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage,
	})
}

// lookupPrefix runs every prompt through the prefix cache and returns the
// hit blocks and the total blocks (a trailing partial block counts in the
// total, never as a hit). Counters are in tokens, like vLLM's.
func (s *Sim) lookupPrefix(model string, prompts []string) (hit, total int) {
	bs := s.cfg.BlockSize
	for _, p := range prompts {
		total += (len(p) + bs - 1) / bs
		if s.cache == nil {
			continue
		}
		h := s.cache.match(blockHashes(model, p, bs))
		hit += h
		s.stats.prefixQueries.Add(int64(promptTokens(p)))
		s.stats.prefixHits.Add(int64(h * bs / bytesPerToken))
	}
	return hit, total
}

// generate runs an admitted generation: queue, prefill (TTFT), then one
// token per ITL, streamed or answered at the end.
func (s *Sim) generate(w http.ResponseWriter, r *http.Request, g *generation) {
	f := s.Faults()
	t := s.admit(w, r, f)
	if t == nil {
		return
	}
	defer t.release()
	ctx := r.Context()

	hit, total := s.lookupPrefix(g.model, g.prompts)
	w.Header().Set(HeaderPrefixHitBlocks, strconv.Itoa(hit))
	ttft := effectiveTTFT(f.scale(s.cfg.TTFT), hit, total)
	itl := f.scale(s.cfg.ITL)

	var sse *sseWriter
	if g.stream {
		sse = newSSEWriter(w, f.FailMidStream)
		if err := sse.open(); err != nil {
			s.stats.cancelled.Add(1)
			return
		}
	}
	if err := t.wait(ctx); err != nil {
		s.stats.cancelled.Add(1)
		return
	}
	start := time.Now()
	prompt := 0
	for _, p := range g.prompts {
		prompt += promptTokens(p)
	}
	s.stats.promptTokens.Add(int64(prompt))
	resp := response{
		gen:     g,
		id:      s.responseID(g.chat),
		created: start.Unix(),
		seed:    s.cfg.Seed,
		usage:   newUsage(prompt, g.maxTokens*len(g.prompts)),
	}

	if !g.stream {
		if err := sleepUntil(ctx, start.Add(ttft+time.Duration(g.maxTokens)*itl)); err != nil {
			s.stats.cancelled.Add(1)
			return
		}
		s.stats.generationTokens.Add(int64(resp.usage.CompletionTokens))
		writeJSON(w, http.StatusOK, resp.whole())
		s.stats.completed.Add(1)
		return
	}

	resp.tokens = make([]*tokenSource, len(g.prompts))
	for i, p := range g.prompts {
		resp.tokens[i] = newTokenSource(s.cfg.Seed, p)
	}
	err := s.streamTokens(ctx, sse, &resp, start.Add(ttft), itl)
	switch {
	case err == nil:
		s.stats.completed.Add(1)
	case errors.Is(err, errStreamCut):
		s.stats.errors.Add(1)
		sse.abort()
	default: // the client went away, or a write to it failed
		s.stats.cancelled.Add(1)
	}
}

// streamTokens sends token step i of every choice at first+i*itl, then the
// usage chunk if asked for, then [DONE]. Deadlines are absolute so that
// write time does not make the pacing drift.
func (s *Sim) streamTokens(ctx context.Context, sse *sseWriter, resp *response, first time.Time, itl time.Duration) error {
	for i := range resp.gen.maxTokens {
		if err := sleepUntil(ctx, first.Add(time.Duration(i)*itl)); err != nil {
			return err
		}
		if i == 0 && resp.gen.chat {
			if err := sse.send(resp.roleChunk()); err != nil {
				return err
			}
		}
		for c := range resp.tokens {
			err := sse.send(resp.tokenChunk(c, i))
			if err == nil || errors.Is(err, errStreamCut) { // the token went out
				s.stats.generationTokens.Add(1)
			}
			if err != nil {
				return err
			}
		}
	}
	if resp.gen.includeUsage {
		if err := sse.send(resp.usageChunk()); err != nil {
			return err
		}
	}
	return sse.done()
}

// responseID numbers responses per simulator, with OpenAI's prefixes.
func (s *Sim) responseID(chat bool) string {
	prefix := "cmpl"
	if chat {
		prefix = "chatcmpl"
	}
	return fmt.Sprintf("%s-%s-%d", prefix, s.cfg.ID, s.seq.Add(1))
}
