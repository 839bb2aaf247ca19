package deploy_test

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// designMetrics is DESIGN.md's minimum metric set ("Metrics"), family name
// to labels. TestDesignMetricList keeps it equal to DESIGN.md when that file
// is at hand.
var designMetrics = map[string][]string{
	"blitz_requests_total":                        {"model", "instance", "priority", "code"},
	"blitz_request_duration_seconds":              {"model", "priority"},
	"blitz_time_to_first_token_seconds":           {"model"},
	"blitz_inter_token_latency_seconds":           {"model"},
	"blitz_tokens_total":                          {"model", "type"},
	"blitz_inflight_requests":                     {"instance"},
	"blitz_queue_depth":                           {"priority"},
	"blitz_shed_total":                            {"priority", "reason"},
	"blitz_retries_total":                         {"reason"},
	"blitz_breaker_state":                         {"instance"},
	"blitz_instances":                             {"model", "state"},
	"blitz_discovery_last_sync_timestamp_seconds": {"source"},
	"blitz_load_publish_total":                    {"result"},
	"blitz_overhead_seconds":                      {},
}

// designHistograms are the families exposed as _bucket, _sum and _count.
var designHistograms = map[string]bool{
	"blitz_request_duration_seconds":    true,
	"blitz_time_to_first_token_seconds": true,
	"blitz_inter_token_latency_seconds": true,
	"blitz_overhead_seconds":            true,
}

// extraSeries are series Prometheus makes itself that rules may use, and
// the sidecar's families beyond DESIGN.md's minimum set.
var extraSeries = map[string]bool{"up": true, "blitz_discovery_stale": true, "blitz_breaker_transitions_total": true}

// extraLabels are labels outside DESIGN.md that a query may name: `le` of
// histogram buckets and `job` of the scrape configuration.
var extraLabels = map[string]bool{"le": true, "job": true}

// family maps a series name to its DESIGN.md family, "" if it has none.
func family(series string) string {
	if _, ok := designMetrics[series]; ok {
		return series
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(series, suffix); ok && designHistograms[f] {
			return f
		}
	}
	return ""
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promMatchers = regexp.MustCompile(`\{([^{}]*)\}`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)`)
	promToken    = regexp.MustCompile(`\d[\w.]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
		"on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true,
	}
)

// promqlNames returns the series and label names a PromQL expression uses.
// It is a scanner, not a parser: it drops strings, ranges and label lists,
// then takes every identifier not followed by "(" (a function or an
// aggregation) and not a keyword as a series name. Syntax is promtool's job
// (TestPromtool).
func promqlNames(expr string) (series, labels []string) {
	e := promString.ReplaceAllString(expr, `""`)
	for _, m := range promMatchers.FindAllStringSubmatch(e, -1) {
		for _, l := range promMatcher.FindAllStringSubmatch(m[1], -1) {
			labels = append(labels, l[1])
		}
	}
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRange.ReplaceAllString(e, " ")
	for _, m := range promGrouping.FindAllStringSubmatch(e, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	e = promGrouping.ReplaceAllString(e, " ")
	for _, loc := range promToken.FindAllStringIndex(e, -1) {
		tok := e[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promKeywords[strings.ToLower(tok)] {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue
		}
		series = append(series, tok)
	}
	return series, labels
}

// checkPromQL fails unless expr uses at least one DESIGN.md metric, and only
// DESIGN.md metrics (or extraSeries) and labels (or extraLabels).
func checkPromQL(t *testing.T, where, expr string) {
	t.Helper()
	labelOK := map[string]bool{}
	for _, ls := range designMetrics {
		for _, l := range ls {
			labelOK[l] = true
		}
	}
	series, labels := promqlNames(expr)
	design := 0
	for _, s := range series {
		switch {
		case family(s) != "":
			design++
		case extraSeries[s]:
		default:
			t.Errorf("%s: %q uses %s, which is not in DESIGN.md's metric set", where, expr, s)
		}
	}
	if design == 0 && !allExtra(series) {
		t.Errorf("%s: %q uses no DESIGN.md metric", where, expr)
	}
	for _, l := range labels {
		if !labelOK[l] && !extraLabels[l] {
			t.Errorf("%s: %q uses label %q, which no DESIGN.md metric has", where, expr, l)
		}
	}
}

func allExtra(series []string) bool {
	for _, s := range series {
		if !extraSeries[s] {
			return false
		}
	}
	return len(series) > 0
}

func TestPromqlNames(t *testing.T) {
	for _, tc := range []struct {
		expr           string
		series, labels []string
	}{
		{`blitz_breaker_state == 2`, []string{"blitz_breaker_state"}, nil},
		{`max by (instance) (blitz_breaker_state) == 2`, []string{"blitz_breaker_state"}, []string{"instance"}},
		{
			`histogram_quantile(0.99, sum by (model, le) (rate(blitz_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval])))`,
			[]string{"blitz_request_duration_seconds_bucket"}, []string{"model", "model", "le"},
		},
		{
			`sum without (instance, reason) (rate(blitz_shed_total[5m])) / sum without (instance, model, code) (rate(blitz_requests_total[5m])) > 0.05`,
			[]string{"blitz_shed_total", "blitz_requests_total"}, []string{"instance", "reason", "instance", "model", "code"},
		},
		{`time() - blitz_discovery_last_sync_timestamp_seconds > 3e2`, []string{"blitz_discovery_last_sync_timestamp_seconds"}, nil},
		{`up{job=~"a{b}"} == 0 and on() vector(1)`, []string{"up"}, []string{"job"}},
		{`rate(blitz_load_publish_total{result="error"}[5m] offset 1h) > bool 0`, []string{"blitz_load_publish_total"}, []string{"result"}},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			series, labels := promqlNames(tc.expr)
			if diff := cmp.Diff(tc.series, series); diff != "" {
				t.Errorf("series (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.labels, labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDesignMetricList keeps designMetrics equal to DESIGN.md's list. The
// file lives beside the repository (../../shared/DESIGN.md), where CI and the
// developers have it; elsewhere the test says so and skips.
func TestDesignMetricList(t *testing.T) {
	data, err := os.ReadFile("../../shared/DESIGN.md")
	if err != nil {
		t.Skipf("DESIGN.md not beside the repository (%v): designMetrics cannot be compared with it", err)
	}
	_, section, ok := strings.Cut(string(data), "## Metrics")
	if !ok {
		t.Fatal(`DESIGN.md has no "## Metrics" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	got := map[string][]string{}
	for _, m := range regexp.MustCompile("`(blitz_[a-z_]+)(?:\\{([a-z_,]*)\\})?").FindAllStringSubmatch(section, -1) {
		labels := []string{}
		if m[2] != "" {
			labels = strings.Split(m[2], ",")
		}
		got[m[1]] = labels
	}
	if diff := cmp.Diff(designMetrics, got); diff != "" {
		t.Errorf("designMetrics differs from DESIGN.md's Metrics section (-test +DESIGN.md):\n%s", diff)
	}
	var names []string
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("DESIGN.md metrics: %v", names)
}
