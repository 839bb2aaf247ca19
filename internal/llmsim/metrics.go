package llmsim

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newMetricsHandler serves vLLM-named metrics from a private registry, so
// that several simulators in one process (the demo runs three) never
// collide on the global one. Every value is read from the same atomics
// as Stats at scrape time, so /metrics and /sim/stats always agree.
func newMetricsHandler(s *Sim) http.Handler {
	labels := prometheus.Labels{"model_name": s.cfg.Models[0]}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
			func() float64 { return float64(s.sched.nRunning.Load()) }),
		gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
			func() float64 { return float64(s.sched.nWaiting.Load()) }),
		// vLLM counts cached but unreferenced blocks as free, so its KV usage
		// follows the running batch, not the prefix cache; the simulator
		// reports the fraction of running slots in use for the same reason.
		gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage (simulated: fraction of running slots in use).",
			func() float64 { return float64(s.sched.nRunning.Load()) / float64(s.cfg.MaxConcurrency) }),
		counter("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens.",
			func() float64 { return float64(s.stats.prefixQueries.Load()) }),
		counter("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
			func() float64 { return float64(s.stats.prefixHits.Load()) }),
		counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.",
			func() float64 { return float64(s.stats.promptTokens.Load()) }),
		counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
			func() float64 { return float64(s.stats.generationTokens.Load()) }),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
