package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/blitzscale/router/routing"
)

// ScrapeConfig tunes how the sidecar reads each engine's own queue from its
// Prometheus endpoint. The router treats a reading older than its
// EngineStaleAfter as absent, so a failing scrape degrades to the other
// signals and never blocks a request.
type ScrapeConfig struct {
	// Interval between scrapes of an instance. Default 1s; negative disables.
	Interval time.Duration
	// Timeout of one scrape. Default 500ms.
	Timeout time.Duration
}

func (c ScrapeConfig) withDefaults() ScrapeConfig {
	setDefault(&c.Interval, time.Second)
	setDefault(&c.Timeout, 500*time.Millisecond)
	return c
}

// maxScrapeBytes bounds one exposition; vLLM's is about 100 KB.
const maxScrapeBytes = 8 << 20

// engineMetrics names one engine family's queue metrics.
type engineMetrics struct{ waiting, running, kvUsage string }

var (
	vllmMetrics = engineMetrics{"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"}
	// vLLM before V1 called the KV-cache gauge gpu_cache_usage_perc.
	vllmOldKV     = "vllm:gpu_cache_usage_perc"
	sglangMetrics = engineMetrics{"sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"}
)

// scrapeEngines scrapes, every Interval until ctx ends, the instances this
// sidecar has routed to.
func (s *Server) scrapeEngines(ctx context.Context) {
	cfg := s.conf().Scrape.withDefaults()
	if cfg.Interval < 0 {
		return
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := s.router.Table()
		if t == nil {
			continue
		}
		// The transport of the moment: a reload may have replaced it.
		client := &http.Client{Transport: s.rt.Load().transport, Timeout: cfg.Timeout}
		var wg sync.WaitGroup
		for _, ep := range t.Endpoints() {
			if ep.Load.Requests() == 0 {
				continue
			}
			wg.Go(func() {
				if err := s.scrapeEngine(ctx, client, ep); err != nil {
					s.conf().Logger.Debug("engine scrape failed", "instance", ep.Instance.ID, "err", err)
				}
			})
		}
		wg.Wait()
	}
}

func (s *Server) scrapeEngine(ctx context.Context, client *http.Client, ep *routing.Endpoint) error {
	path := ep.Instance.Meta["metrics_path"]
	if path == "" {
		path = "/metrics"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ep.Instance.Address+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	stats, err := parseEngineMetrics(io.LimitReader(resp.Body, maxScrapeBytes), ep.Instance.Meta["engine"])
	if err != nil {
		return err
	}
	stats.At = s.now()
	ep.Load.SetEngine(stats)
	return nil
}

// parseEngineMetrics reads the queue gauges of a vLLM or SGLang exposition,
// summing over label sets (one engine may report per model or per rank).
func parseEngineMetrics(r io.Reader, engine string) (routing.EngineStats, error) {
	names := vllmMetrics
	if engine == "sglang" {
		names = sglangMetrics
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return routing.EngineStats{}, fmt.Errorf("parsing the engine's metrics: %w", err)
	}
	waiting, okW := sum(families[names.waiting])
	running, okR := sum(families[names.running])
	if !okW && !okR {
		return routing.EngineStats{}, fmt.Errorf("no %s or %s in the engine's metrics", names.waiting, names.running)
	}
	kv, ok := sum(families[names.kvUsage])
	if !ok && engine != "sglang" {
		kv, _ = sum(families[vllmOldKV])
	}
	return routing.EngineStats{Waiting: int64(waiting), Running: int64(running), KVCacheUsage: kv}, nil
}

func sum(f *dto.MetricFamily) (float64, bool) {
	if f == nil {
		return 0, false
	}
	var total float64
	for _, m := range f.GetMetric() {
		switch {
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total, true
}
