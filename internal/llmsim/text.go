package llmsim

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"
)

// bytesPerToken is the simulator's tokenizer: about 4 bytes of English per
// token, the usual rule of thumb.
const bytesPerToken = 4

// promptTokens estimates the tokens of a prompt: bytes/4, at least 1, since
// every real prompt costs at least one token (a BOS or template token).
func promptTokens(text string) int {
	return max(1, len(text)/bytesPerToken)
}

// vocabulary is what simulated output is made of: short words with a
// leading space, so that one word is about one token.
var vocabulary = [...]string{
	" the", " of", " and", " to", " in", " is", " that", " for", " it", " as",
	" with", " was", " on", " be", " by", " at", " this", " are", " from", " or",
	" an", " but", " not", " have", " which", " one", " all", " they", " were", " can",
	" model", " token", " cache", " route", " fast", " load", " queue", " node",
	" time", " data", " next", " word", " flow", " host", " path", " rate",
}

// tokenSource yields the output tokens of one choice, one at a time, so a
// long stream costs no memory per token. The words depend only on the seed
// and the prompt, so the same request gets the same answer, as with greedy
// decoding on a real engine.
type tokenSource struct{ rng *rand.Rand }

func newTokenSource(seed int64, prompt string) *tokenSource {
	return &tokenSource{rng: rand.New(rand.NewPCG(uint64(seed), fnvString(fnvOffset64, prompt)))}
}

func (ts *tokenSource) next() string { return vocabulary[ts.rng.IntN(len(vocabulary))] }

// outputText returns the first n tokens of prompt's output, concatenated.
func outputText(seed int64, prompt string, n int) string {
	ts := newTokenSource(seed, prompt)
	var sb strings.Builder
	for range n {
		sb.WriteString(ts.next())
	}
	return sb.String()
}

// minCachedTTFTFraction is the share of TTFT that even a full prefix-cache
// hit pays: the last block is always recomputed and scheduling is not free.
const minCachedTTFTFraction = 0.1

// effectiveTTFT scales ttft by the uncached fraction of the prompt's
// blocks, floored at minCachedTTFTFraction of ttft.
func effectiveTTFT(ttft time.Duration, hitBlocks, totalBlocks int) time.Duration {
	if totalBlocks <= 0 || hitBlocks <= 0 {
		return ttft
	}
	frac := max(1-float64(hitBlocks)/float64(totalBlocks), minCachedTTFTFraction)
	return time.Duration(float64(ttft) * frac)
}

// sleepUntil waits until deadline or until ctx is done, whichever is first,
// without leaving a timer behind.
func sleepUntil(ctx context.Context, deadline time.Time) error {
	d := time.Until(deadline)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
