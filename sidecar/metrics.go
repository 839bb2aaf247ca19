package sidecar

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/routing"
)

// metrics are the sidecar's Prometheus families (prefix blitz_), on a
// registry of its own so that tests and embedders never share state. Labels
// carry model and instance ids from the routing table and fixed enums only:
// never a session id, prompt or key.
type metrics struct {
	registry *prometheus.Registry
	handler  http.Handler

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ttftHist *prometheus.HistogramVec
	shedding *prometheus.CounterVec
	retries  *prometheus.CounterVec
	lastSync *prometheus.GaugeVec
	overhead prometheus.Histogram
	publishs *prometheus.CounterVec

	breakerTransitions *prometheus.CounterVec
	itlHist            *prometheus.HistogramVec
	tokensTotal        *prometheus.CounterVec
}

// latencyBuckets span LLM latencies: 5 ms to about 2 minutes.
var latencyBuckets = prometheus.ExponentialBuckets(0.005, 2, 15)

func newMetrics(s *Server) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blitz_requests_total", Help: "Proxied requests by model, instance, priority and HTTP status (499: client went away).",
		}, []string{"model", "instance", "priority", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "blitz_request_duration_seconds", Help: "Time from request arrival to the end of the response.", Buckets: latencyBuckets,
		}, []string{"model", "priority"}),
		ttftHist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "blitz_time_to_first_token_seconds", Help: "Time from sending a streaming request upstream to its first SSE event.", Buckets: latencyBuckets,
		}, []string{"model"}),
		shedding: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blitz_shed_total", Help: "Requests refused by admission or for lack of a healthy instance.",
		}, []string{"priority", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blitz_retries_total", Help: "Requests retried on another instance, by the failure that caused it.",
		}, []string{"reason"}),
		lastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blitz_discovery_last_sync_timestamp_seconds", Help: "Unix time of the last snapshot discovery delivered.",
		}, []string{"source"}),
		overhead: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "blitz_overhead_seconds", Help: "Sidecar time from request arrival to the upstream request being sent.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 2, 16),
		}),
	}
	m.publishs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blitz_load_publish_total", Help: "Load record publishes by result (ok, error, skipped).",
	}, []string{"result"})
	m.itlHist = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "blitz_inter_token_latency_seconds", Help: "Time between consecutive SSE events of a stream, as they pass through.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 13),
	}, []string{"model"})
	m.tokensTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blitz_tokens_total", Help: "Tokens by model and type (prompt, completion), from the engines' usage reports.",
	}, []string{"model", "type"})
	m.breakerTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "blitz_breaker_transitions_total", Help: "Circuit breaker transitions, by the state entered.",
	}, []string{"to"})
	m.registry.MustRegister(m.itlHist, m.tokensTotal, m.breakerTransitions, m.publishs, m.requests, m.duration, m.ttftHist, m.shedding, m.retries, m.lastSync, m.overhead,
		&tableCollector{s: s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Bounded enums start at zero, so dashboards and alerts see the series
	// before the first event.
	for _, r := range []string{"ok", "error", "skipped"} {
		m.publishs.WithLabelValues(r)
	}
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	return m
}

// statusLabels avoids formatting common status codes per request.
var statusLabels = map[int]string{200: "200", 400: "400", 404: "404", 413: "413", 429: "429", 499: "499", 500: "500", 502: "502", 503: "503", 504: "504"}

func statusLabel(code int) string {
	if s, ok := statusLabels[code]; ok {
		return s
	}
	return strconv.Itoa(code)
}

// labelNone stands for a model or instance the request never reached: an
// empty label would vanish in Prometheus (and pick up the target's own
// instance label).
const labelNone = "none"

func (m *metrics) done(model, instance string, prio routing.Priority, code int, d time.Duration) {
	if model == "" {
		model = labelNone
	}
	if instance == "" {
		instance = labelNone
	}
	m.requests.WithLabelValues(model, instance, prio.String(), statusLabel(code)).Inc()
	m.duration.WithLabelValues(model, prio.String()).Observe(d.Seconds())
}

func (m *metrics) publish(result string) { m.publishs.WithLabelValues(result).Inc() }

func (m *metrics) shed(prio routing.Priority, reason string) {
	m.shedding.WithLabelValues(prio.String(), reason).Inc()
}

// ttft observes a stream's time to first event under the request's model
// (the table's name for it), not the instance's first model: an instance
// may serve several.
func (m *metrics) ttft(model string, d time.Duration) {
	m.ttftHist.WithLabelValues(model).Observe(d.Seconds())
}

// itlObserver is the inter-token histogram of model; a stream looks it up
// once and observes every gap into it.
func (m *metrics) itlObserver(model string) prometheus.Observer {
	return m.itlHist.WithLabelValues(model)
}

// observeN records n gaps of the same length.
func observeN(o prometheus.Observer, gap time.Duration, n int) {
	for range n {
		o.Observe(gap.Seconds())
	}
}

func (m *metrics) tokens(model string, prompt, completion int64) {
	m.tokensTotal.WithLabelValues(model, "prompt").Add(float64(prompt))
	m.tokensTotal.WithLabelValues(model, "completion").Add(float64(completion))
}

func (m *metrics) observeSync(snap discovery.Snapshot) {
	t := snap.SyncedAt
	if t.IsZero() {
		t = time.Now()
	}
	m.lastSync.WithLabelValues(snap.Source).Set(float64(t.UnixNano()) / 1e9)
}

// tableCollector reads the live counters of the current table at scrape
// time, so the request path pays nothing for these gauges.
type tableCollector struct{ s *Server }

var (
	inflightDesc  = prometheus.NewDesc("blitz_inflight_requests", "Requests this sidecar has open to the instance.", []string{"instance"}, nil)
	queueDesc     = prometheus.NewDesc("blitz_queue_depth", "Requests waiting in the sidecar for an instance, by priority.", []string{"priority"}, nil)
	breakerDesc   = prometheus.NewDesc("blitz_breaker_state", "Circuit breaker state of the instance: 0 closed, 1 half-open, 2 open.", []string{"instance"}, nil)
	instancesDesc = prometheus.NewDesc("blitz_instances", "Instances serving the model, by state (routable or draining).", []string{"model", "state"}, nil)
	staleDesc     = prometheus.NewDesc("blitz_discovery_stale", "1 while the routing view is a persisted snapshot the registry has not confirmed yet, else 0.", nil, nil)
)

func (c *tableCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- breakerDesc
	ch <- queueDesc
	ch <- instancesDesc
	ch <- staleDesc
}

func (c *tableCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range []routing.Priority{routing.PriorityHigh, routing.PriorityNormal, routing.PriorityLow} {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(c.s.router.QueueDepth(p)), p.String())
	}
	t := c.s.router.Table()
	stale := 0.0
	if t != nil && t.Snapshot().Stale {
		stale = 1
	}
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, stale)
	if t == nil {
		return
	}
	for _, ep := range t.Endpoints() {
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(ep.Load.InFlight()), ep.Instance.ID)
		ch <- prometheus.MustNewConstMetric(breakerDesc, prometheus.GaugeValue, float64(ep.Load.Breaker()), ep.Instance.ID)
	}
	for _, model := range t.Models() {
		var routable, draining int
		for _, ep := range t.ForModel([]byte(model)).Endpoints {
			if ep.Instance.Draining {
				draining++
			} else {
				routable++
			}
		}
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(routable), model, "routable")
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(draining), model, "draining")
	}
}
