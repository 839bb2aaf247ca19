package main

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/blitzscale/router/internal/llmsim"
)

// latency holds percentiles in milliseconds.
type latency struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	N   int64   `json:"n"`
}

// counts are the outcomes of a set of requests.
type counts struct {
	Sent        int `json:"sent"`
	OK          int `json:"ok"`
	Shed        int `json:"shed"`
	Unavailable int `json:"unavailable"`
	Errors      int `json:"errors"`
	Incomplete  int `json:"incomplete"`
}

func (c *counts) add(kind string) {
	c.Sent++
	switch kind {
	case kindOK:
		c.OK++
	case kindShed:
		c.Shed++
	case kindUnavailable:
		c.Unavailable++
	case kindIncomplete:
		c.Incomplete++
	default:
		c.Errors++
	}
}

// classStats is one priority's share of a run.
type classStats struct {
	counts
	TTFT latency `json:"ttft"`
	E2E  latency `json:"e2e"`
}

// engineShare is one engine's part of a run.
type engineShare struct {
	ID            string  `json:"id"`
	Requests      int64   `json:"requests"`
	Share         float64 `json:"share"`
	PrefixHitRate float64 `json:"prefix_hit_rate"`
	// E2EP99 is the p99 end-to-end latency of the requests it served.
	E2EP99 float64 `json:"e2e_p99_ms"`
}

// result is one run: a policy in a topology on one workload.
type result struct {
	Scenario     string                `json:"scenario"` // main, priority-unloaded, priority-flood, ...
	Topology     string                `json:"topology"` // single, fleet or direct
	Policy       string                `json:"policy"`
	Caps         bool                  `json:"meta_caps"` // engines registered with max_concurrency = slots
	Sidecars     int                   `json:"sidecars"`
	OfferedRPS   float64               `json:"offered_rps"`
	Window       float64               `json:"window_s"` // measured seconds
	counts                             // measured window only
	TTFT         latency               `json:"ttft"`
	E2E          latency               `json:"e2e"`
	Throughput   float64               `json:"throughput_rps"`
	TokensPerSec float64               `json:"tokens_per_s"`
	HitRate      float64               `json:"prefix_hit_rate"`
	Balance      float64               `json:"balance_max_over_mean"`
	Engines      []engineShare         `json:"engines"`
	Routes       map[string]int        `json:"routes"`
	ByPriority   map[string]classStats `json:"by_priority"`
	WallSeconds  float64               `json:"wall_s"`
}

// label is the policy as tables show it: "+caps" marks engines registered
// with meta max_concurrency.
func (r result) label() string {
	if r.Caps {
		return r.Policy + "+caps"
	}
	return r.Policy
}

type hist struct{ h *hdrhistogram.Histogram }

func newHist() hist {
	// 1 µs to 10 min at 3 significant digits.
	return hist{hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)}
}

func (h hist) record(d time.Duration) { _ = h.h.RecordValue(max(1, d.Microseconds())) }

func (h hist) latency() latency {
	ms := func(q float64) float64 { return float64(h.h.ValueAtQuantile(q)) / 1000 }
	if h.h.TotalCount() == 0 {
		return latency{}
	}
	return latency{P50: ms(50), P90: ms(90), P99: ms(99), Max: float64(h.h.Max()) / 1000, N: h.h.TotalCount()}
}

// summarize turns the outcomes of requests planned at or after warmup, and
// the engines' counters over the same window, into a result.
func summarize(r *result, outs []outcome, warmup, window time.Duration, before, after map[string]llmsim.Stats) {
	ttft, e2e := newHist(), newHist()
	type classHists struct {
		c         counts
		ttft, e2e hist
	}
	classes := map[string]*classHists{}
	r.Routes = map[string]int{}
	perEngine := map[string]hist{}
	tokens := 0
	for _, o := range outs {
		if o.Req.At < warmup {
			continue
		}
		cl := classes[o.Req.Priority]
		if cl == nil {
			cl = &classHists{ttft: newHist(), e2e: newHist()}
			classes[o.Req.Priority] = cl
		}
		r.add(o.Kind)
		cl.c.add(o.Kind)
		if o.Route != "" {
			r.Routes[o.Route]++
		}
		if o.Kind != kindOK {
			continue
		}
		tokens += o.Tokens
		if perEngine[o.Instance].h == nil {
			perEngine[o.Instance] = newHist()
		}
		perEngine[o.Instance].record(o.E2E)
		ttft.record(o.TTFT)
		e2e.record(o.E2E)
		cl.ttft.record(o.TTFT)
		cl.e2e.record(o.E2E)
	}
	r.TTFT, r.E2E = ttft.latency(), e2e.latency()
	r.Window = window.Seconds()
	r.Throughput = float64(r.OK) / window.Seconds()
	r.TokensPerSec = float64(tokens) / window.Seconds()
	r.ByPriority = map[string]classStats{}
	for p, cl := range classes {
		r.ByPriority[p] = classStats{counts: cl.c, TTFT: cl.ttft.latency(), E2E: cl.e2e.latency()}
	}

	var total, maxReq, hits, queries int64
	for _, e := range engines {
		b, a := before[e.ID], after[e.ID]
		n := a.Requests - b.Requests
		h, q := a.PrefixHits-b.PrefixHits, a.PrefixQueries-b.PrefixQueries
		total += n
		maxReq = max(maxReq, n)
		hits += h
		queries += q
		es := engineShare{ID: e.ID, Requests: n, PrefixHitRate: ratio(float64(h), float64(q))}
		if ph, ok := perEngine[e.ID]; ok {
			es.E2EP99 = ph.latency().P99
		}
		r.Engines = append(r.Engines, es)
	}
	for i := range r.Engines {
		r.Engines[i].Share = ratio(float64(r.Engines[i].Requests), float64(total))
	}
	r.HitRate = ratio(float64(hits), float64(queries))
	r.Balance = ratio(float64(maxReq), float64(total)/float64(len(engines)))
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	v := a / b
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
