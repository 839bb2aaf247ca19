package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what one Run measured, inside its measurement window only
// (warm-up excluded). Latencies are of successful requests; times are in
// microseconds (float, so sub-microsecond differences survive).
type Result struct {
	Target      string    `json:"target"` // the base URLs, comma-separated
	Model       string    `json:"model"`
	Mode        string    `json:"mode"`
	Rate        float64   `json:"rate,omitempty"`        // open loop: requests per second asked for
	Concurrency int       `json:"concurrency,omitempty"` // closed loop: workers
	Stream      bool      `json:"stream"`
	Endpoint    string    `json:"endpoint"`
	MaxTokens   int       `json:"max_tokens"`
	PromptBytes int       `json:"prompt_bytes"`
	Started     time.Time `json:"started"`
	// WarmupSeconds ran before the window, unmeasured.
	WarmupSeconds float64 `json:"warmup_seconds"`
	// Seconds is the measurement window: from the end of the warm-up to the
	// later of the planned end and the last measured request's end.
	Seconds float64 `json:"seconds"`

	Sent      int64 `json:"sent"`      // requests started in the window
	Completed int64 `json:"completed"` // of which succeeded
	Failed    int64 `json:"failed"`    // of which failed; kinds in Errors
	// Incomplete requests were still running when the run cut them after
	// its drain; they are neither successes nor errors.
	Incomplete   int64            `json:"incomplete"`
	Errors       map[string]int64 `json:"errors"`
	Throughput   float64          `json:"throughput_rps"` // completed per second
	Tokens       int64            `json:"tokens"`         // token events (streams) or usage.completion_tokens
	TokensPerSec float64          `json:"tokens_per_s"`

	// Latency is end to end: intended send to last byte.
	Latency Summary `json:"latency"`
	// TTFT is intended send to the first token event; ITL the gaps
	// between token events. Streams only.
	TTFT *Summary `json:"ttft,omitempty"`
	ITL  *Summary `json:"itl,omitempty"`
	// Service is actual send to last byte. It leaves out the generator's
	// own send lag (timer granularity: about 1 ms here), so it resolves
	// small differences between targets better than Latency, but unlike
	// Latency it would hide a target stalling the generator. Open loop
	// only: in the closed loop both are the same.
	Service *Summary `json:"service,omitempty"`
	// SendLag is how late the open loop sent requests after their intended
	// time; a large one means the generator, not the target, was short of
	// CPU (the lag is inside Latency all the same). Open loop only.
	SendLag *Summary `json:"send_lag,omitempty"`
}

// Summary describes one histogram, in microseconds.
type Summary struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
	// Curve is the value at each of CurvePercentiles, for plots.
	Curve []Point `json:"curve"`
}

// Point is a histogram's value at one percentile.
type Point struct {
	Percentile float64 `json:"percentile"`
	Micros     float64 `json:"us"`
}

// CurvePercentiles are the points of Summary.Curve: dense in the tail,
// where proxies differ.
var CurvePercentiles = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100}

func us(ns int64) float64 { return float64(ns) / 1e3 }

func summarize(h *hdrhistogram.Histogram) Summary {
	s := Summary{Count: h.TotalCount()}
	if s.Count == 0 {
		return s
	}
	s.Min, s.Mean, s.Max = us(h.Min()), h.Mean()/1e3, us(h.Max())
	s.P50, s.P90 = us(h.ValueAtPercentile(50)), us(h.ValueAtPercentile(90))
	s.P99, s.P999 = us(h.ValueAtPercentile(99)), us(h.ValueAtPercentile(99.9))
	for _, p := range CurvePercentiles {
		s.Curve = append(s.Curve, Point{Percentile: p, Micros: us(h.ValueAtPercentile(p))})
	}
	return s
}

// result builds the Result of a finished run.
func (r *recorder) result(c Config, start, from, end time.Time) *Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := end
	if r.lastEnd.After(last) {
		last = r.lastEnd
	}
	res := &Result{
		Target: strings.Join(c.URLs, ","), Model: c.Model, Mode: c.Mode,
		Stream: c.Stream, Endpoint: c.Endpoint, MaxTokens: c.MaxTokens, PromptBytes: c.PromptBytes,
		Started: start, WarmupSeconds: c.Warmup.Seconds(), Seconds: last.Sub(from).Seconds(),
		Sent: r.sent, Completed: r.completed, Failed: r.failed, Incomplete: r.incomplete,
		Errors: maps.Clone(r.errors), Tokens: r.tokens,
		Latency: summarize(r.e2e),
	}
	if c.Mode == ModeOpen {
		res.Rate = c.Rate
		lag, service := summarize(r.lag), summarize(r.service)
		res.SendLag, res.Service = &lag, &service
	} else {
		res.Concurrency = c.Concurrency
	}
	if c.Stream {
		ttft, itl := summarize(r.ttft), summarize(r.itl)
		res.TTFT, res.ITL = &ttft, &itl
	}
	if res.Seconds > 0 {
		res.Throughput = float64(res.Completed) / res.Seconds
		res.TokensPerSec = float64(res.Tokens) / res.Seconds
	}
	return res
}

// WriteJSON writes r as indented JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes r as a short human-readable report.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	load := fmt.Sprintf("closed loop, %d workers", r.Concurrency)
	if r.Mode == ModeOpen {
		load = fmt.Sprintf("open loop, %g req/s", r.Rate)
	}
	kind := "non-streaming"
	if r.Stream {
		kind = "streaming"
	}
	fmt.Fprintf(&b, "%s  %s  %s %s, max_tokens %d, %.1fs measured\n", r.Target, load, kind, r.Endpoint, r.MaxTokens, r.Seconds)
	fmt.Fprintf(&b, "requests: %d sent, %d ok, %d failed, %d incomplete; %.1f req/s; %d tokens (%.1f/s)\n",
		r.Sent, r.Completed, r.Failed, r.Incomplete, r.Throughput, r.Tokens, r.TokensPerSec)
	fmt.Fprintf(&b, "%-9s %9s %9s %9s %9s %9s %9s %9s\n", "", "p50", "p90", "p99", "p99.9", "max", "mean", "count")
	row := func(name string, s *Summary) {
		if s == nil {
			return
		}
		fmt.Fprintf(&b, "%-9s %9s %9s %9s %9s %9s %9s %9d\n", name,
			FormatMicros(s.P50), FormatMicros(s.P90), FormatMicros(s.P99), FormatMicros(s.P999),
			FormatMicros(s.Max), FormatMicros(s.Mean), s.Count)
	}
	row("latency", &r.Latency)
	row("service", r.Service)
	row("ttft", r.TTFT)
	row("itl", r.ITL)
	row("send lag", r.SendLag)
	if len(r.Errors) > 0 {
		b.WriteString("errors:")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, " %s=%d", k, r.Errors[k])
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FormatMicros prints a time in microseconds with a unit that keeps three
// or four significant digits: 850µs, 1.23ms, 2.50s.
func FormatMicros(v float64) string {
	switch {
	case v < 1000:
		return fmt.Sprintf("%.0fµs", v)
	case v < 1e6:
		return fmt.Sprintf("%.2fms", v/1e3)
	default:
		return fmt.Sprintf("%.2fs", v/1e6)
	}
}
