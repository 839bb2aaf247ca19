package main

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Models of the experiment: modelA is served by four engines, modelB by two
// (one of them shared with modelA), so one model's backlog can meet the
// other's on a shared engine.
const (
	modelA = "llama-3.1-8b"
	modelB = "qwen-2.5-7b"
)

// workloadConfig shapes the seeded request stream. Every field has a value
// in defaultWorkload; the flags override a few.
type workloadConfig struct {
	Seed     uint64
	Rate     float64       // mean requests per second over the whole run
	Duration time.Duration // warmup + measured window
	Sidecars int           // fleet members the requests are spread over

	ModelBShare float64 // fraction of requests for modelB
	DocsA       int     // shared documents ("system prompts") of modelA
	DocsB       int     // shared documents of modelB
	DocBytes    int     // length of one shared document
	ZipfS       float64 // popularity skew of the documents: weight 1/(rank+1)^s
	UniqueShare float64 // fraction of requests with a unique prompt (no shared prefix)
	HighShare   float64 // fraction of requests sent with X-Blitz-Priority: high

	// Bursts: Poisson arrivals whose rate alternates between BurstLow×Rate
	// ("off") and BurstHigh×Rate ("on"), each period BurstPeriod long. The
	// mean of BurstHigh and BurstLow is 1, so the mean rate stays Rate.
	BurstHigh, BurstLow float64
	BurstPeriod         time.Duration

	// Output lengths: log-normal with this median and sigma, clamped.
	TokensMedian float64
	TokensSigma  float64
	TokensMin    int
	TokensMax    int

	// Tag starts every question, so that two streams merged into one run
	// (the priority experiment) never share a suffix.
	Tag string
}

var defaultWorkload = workloadConfig{
	ModelBShare:  0.2,
	DocsA:        20,
	DocsB:        6,
	DocBytes:     2048,
	ZipfS:        0.9,
	UniqueShare:  0.1,
	HighShare:    0.1,
	BurstHigh:    1.6,
	BurstLow:     0.4,
	BurstPeriod:  1500 * time.Millisecond,
	TokensMedian: 20,
	TokensSigma:  0.6,
	TokensMin:    4,
	TokensMax:    96,
}

// meanTokens is the expected output length of the clamped log-normal,
// estimated by sampling so that the capacity estimate matches what the
// generator really draws.
func (c workloadConfig) meanTokens() float64 {
	rng := rand.New(rand.NewPCG(1, 2))
	sum := 0
	const n = 100000
	for range n {
		sum += c.drawTokens(rng)
	}
	return float64(sum) / n
}

func (c workloadConfig) drawTokens(rng *rand.Rand) int {
	v := c.TokensMedian * math.Exp(c.TokensSigma*rng.NormFloat64())
	return min(max(int(math.Round(v)), c.TokensMin), c.TokensMax)
}

// request is one planned request: when to send it, where and what.
type request struct {
	Seq       int
	At        time.Duration // intended send time from the start of the run
	Sidecar   int           // index of the fleet member that receives it
	Model     string
	Doc       int // shared document index, -1 for a unique prompt
	System    string
	User      string
	MaxTokens int
	Priority  string // "high", "normal" or "low"
}

// workload is the planned stream plus what is needed to describe it.
type workload struct {
	Requests []request
	Config   workloadConfig
}

// document builds shared document i of a model: a distinct opening line, so
// that the leading bytes (the sidecar's default affinity key) differ, then
// seeded filler text up to n bytes.
func document(rng *rand.Rand, model string, i, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "You are assistant #%d for %s. Answer from the reference document below.\nDocument %d:\n", i, model, i)
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()[:n]
}

var words = [...]string{
	" policy", " invoice", " cluster", " tenant", " latency", " replica", " schedule",
	" contract", " payment", " shipment", " warranty", " region", " account", " the",
	" of", " and", " to", " in", " for", " with", " on", " at", " by", " from",
}

// generate plans the whole run from cfg.Seed: the same seed and config give
// the same requests, byte for byte, whatever the policy under test.
func generate(cfg workloadConfig) workload {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x626c69747a)) // "blitz"
	docs := map[string][]string{}
	for _, m := range []struct {
		name string
		n    int
	}{{modelA, cfg.DocsA}, {modelB, cfg.DocsB}} {
		for i := range m.n {
			docs[m.name] = append(docs[m.name], document(rng, m.name, i, cfg.DocBytes))
		}
	}
	cum := map[string][]float64{modelA: zipfCDF(cfg.DocsA, cfg.ZipfS), modelB: zipfCDF(cfg.DocsB, cfg.ZipfS)}

	var reqs []request
	var t time.Duration
	for {
		// Alternating on and off periods of fixed length, starting "off",
		// so that every run of the same length gets the same share of
		// bursts and the realised rate stays close to Rate.
		rate := cfg.Rate * cfg.BurstLow
		phase := int(t / cfg.BurstPeriod)
		if phase%2 == 1 {
			rate = cfg.Rate * cfg.BurstHigh
		}
		gap := time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if end := time.Duration(phase+1) * cfg.BurstPeriod; t+gap > end {
			// Memorylessness: restart the draw at the change of rate.
			t = end
			continue
		}
		t += gap
		if t >= cfg.Duration {
			break
		}
		r := request{Seq: len(reqs), At: t, Sidecar: rng.IntN(max(1, cfg.Sidecars)), Model: modelA, Priority: "normal"}
		if rng.Float64() < cfg.ModelBShare {
			r.Model = modelB
		}
		if rng.Float64() < cfg.HighShare {
			r.Priority = "high"
		}
		if rng.Float64() < cfg.UniqueShare {
			r.Doc = -1
			r.System = fmt.Sprintf("Request %s%d has its own instructions.", cfg.Tag, r.Seq) + strings.Repeat(" Be brief.", 20)
		} else {
			r.Doc = pick(rng, cum[r.Model])
			r.System = docs[r.Model][r.Doc]
		}
		r.User = question(rng, cfg.Tag, r.Seq)
		r.MaxTokens = cfg.drawTokens(rng)
		reqs = append(reqs, r)
	}
	return workload{Requests: reqs, Config: cfg}
}

// question is the unique suffix of a request: 130 to 320 bytes.
func question(rng *rand.Rand, tag string, seq int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Question %s%d:", tag, seq)
	n := 130 + rng.IntN(190)
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()
}

// zipfCDF is the cumulative distribution of weights 1/(k+1)^s, k < n.
func zipfCDF(n int, s float64) []float64 {
	out := make([]float64, n)
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		out[k] = sum
	}
	for k := range out {
		out[k] /= sum
	}
	return out
}

func pick(rng *rand.Rand, cdf []float64) int {
	u := rng.Float64()
	for i, c := range cdf {
		if u < c {
			return i
		}
	}
	return len(cdf) - 1
}

// floodWorkload is the priority experiment's stream: high-priority requests
// at highRate, plus, when lowRate > 0, a flood of low-priority ones. Both
// are steady Poisson streams on the same documents as the main workload.
func floodWorkload(cfg workloadConfig, highRate, lowRate float64) workload {
	hi := cfg
	hi.Rate, hi.HighShare, hi.BurstHigh, hi.BurstLow = highRate, 1, 1, 1
	w := generate(hi)
	if lowRate > 0 {
		lo := cfg
		lo.Seed, lo.Tag = cfg.Seed+1, "L"
		lo.Rate, lo.HighShare, lo.BurstHigh, lo.BurstLow = lowRate, 0, 1, 1
		for _, r := range generate(lo).Requests {
			r.Priority = "low"
			w.Requests = append(w.Requests, r)
		}
		sortByTime(w.Requests)
	}
	for i := range w.Requests {
		w.Requests[i].Seq = i
	}
	return w
}

func sortByTime(rs []request) {
	slices.SortStableFunc(rs, func(a, b request) int { return cmp.Compare(a.At, b.At) })
}
