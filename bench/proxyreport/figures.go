package main

import (
	"fmt"
	"math"
	"slices"

	"github.com/blitzscale/router/internal/loadgen"
)

// Units of a row's values.
const (
	unitRPS    = "req/s"
	unitMicros = "µs"
	unitMB     = "MB"
	unitKB     = "KB"
	unitCount  = ""
)

// verdict of a row against its goal.
type verdict int

const (
	noGoal verdict = iota
	met
	missed
	unknown // a goal, but a value is missing
)

// row is one line of the side-by-side table.
type row struct {
	name string
	unit string
	// vals are direct, sidecar, nginx; NaN where not measured or not
	// meaningful (memory of "direct", an added latency of direct itself).
	vals [3]float64
	// ratios prints sidecar/nginx and sidecar/direct.
	ratios  bool
	goal    string
	verdict verdict
}

const (
	iDirect = iota
	iSidecar
	iNginx
)

var nan = math.NaN()

// per takes one figure of each target's result in a scenario.
func per(d *data, scenario string, f func(*loadgen.Result) float64) [3]float64 {
	var v [3]float64
	for i, t := range targets {
		v[i] = nan
		if r := d.result(scenario, t); r != nil {
			v[i] = f(r)
		}
	}
	return v
}

// added is each proxy's figure minus direct's: the cost of the hop. It is
// the difference of two percentiles, not a percentile of differences.
func added(v [3]float64) [3]float64 {
	return [3]float64{nan, v[iSidecar] - v[iDirect], v[iNginx] - v[iDirect]}
}

// atMost judges x <= limit; a missing x is unknown.
func atMost(x, limit float64) verdict {
	switch {
	case math.IsNaN(x):
		return unknown
	case x <= limit:
		return met
	}
	return missed
}

func p50(s *loadgen.Summary) float64 {
	if s == nil || s.Count == 0 {
		return nan
	}
	return s.P50
}

func p99(s *loadgen.Summary) float64 {
	if s == nil || s.Count == 0 {
		return nan
	}
	return s.P99
}

// figures computes the side-by-side table against the goals of issue 6.
func figures(d *data) []row {
	var rows []row
	add := func(r row) { rows = append(rows, r) }

	conc, rate, streams := 0, 0.0, 0
	if r := d.result("throughput", "direct"); r != nil {
		conc = r.Concurrency
	}
	if r := d.result("latency", "direct"); r != nil {
		rate = r.Rate
	}
	if r := d.result("ttft", "direct"); r != nil {
		streams = r.Concurrency
	}

	tp := per(d, "throughput", func(r *loadgen.Result) float64 { return r.Throughput })
	tpVerdict := unknown
	if x := tp[iSidecar] / tp[iNginx]; !math.IsNaN(x) {
		tpVerdict = map[bool]verdict{true: met, false: missed}[x >= 1]
	}
	add(row{name: fmt.Sprintf("throughput, non-streaming, %d workers", conc), unit: unitRPS, vals: tp,
		ratios: true, goal: "≥ 1.0× nginx", verdict: tpVerdict})

	latP50 := per(d, "latency", func(r *loadgen.Result) float64 { return p50(&r.Latency) })
	latP99 := per(d, "latency", func(r *loadgen.Result) float64 { return p99(&r.Latency) })
	add(row{name: fmt.Sprintf("latency p50 at %g req/s", rate), unit: unitMicros, vals: latP50, ratios: true})
	add(row{name: fmt.Sprintf("latency p99 at %g req/s", rate), unit: unitMicros, vals: latP99, ratios: true})
	a50, a99 := added(latP50), added(latP99)
	add(row{name: "added latency p50 vs direct", unit: unitMicros, vals: a50, goal: "≤ 50 µs", verdict: atMost(a50[iSidecar], 50)})
	add(row{name: "added latency p99 vs direct", unit: unitMicros, vals: a99, goal: "≤ 300 µs", verdict: atMost(a99[iSidecar], 300)})
	svc50 := added(per(d, "latency", func(r *loadgen.Result) float64 { return p50(r.Service) }))
	svc99 := added(per(d, "latency", func(r *loadgen.Result) float64 { return p99(r.Service) }))
	add(row{name: "added service time p50 (from actual send)", unit: unitMicros, vals: svc50})
	add(row{name: "added service time p99 (from actual send)", unit: unitMicros, vals: svc99})

	t50 := per(d, "ttft", func(r *loadgen.Result) float64 { return p50(r.TTFT) })
	t99 := per(d, "ttft", func(r *loadgen.Result) float64 { return p99(r.TTFT) })
	add(row{name: fmt.Sprintf("TTFT p50 at %d streams", streams), unit: unitMicros, vals: t50, ratios: true})
	add(row{name: fmt.Sprintf("TTFT p99 at %d streams", streams), unit: unitMicros, vals: t99, ratios: true})
	at50, at99 := added(t50), added(t99)
	add(row{name: "added TTFT p50 vs direct", unit: unitMicros, vals: at50})
	add(row{name: "added TTFT p99 vs direct", unit: unitMicros, vals: at99, goal: "≤ 200 µs", verdict: atMost(at99[iSidecar], 200)})

	add(row{name: fmt.Sprintf("proxy CPU per request, %d workers", conc), unit: unitMicros, vals: cpuPer(d, "throughput"), ratios: true})
	add(row{name: fmt.Sprintf("proxy CPU per request, %g req/s", rate), unit: unitMicros, vals: cpuPer(d, "latency"), ratios: true})
	add(row{name: fmt.Sprintf("proxy CPU per stream, %d streams", streams), unit: unitMicros, vals: cpuPer(d, "ttft"), ratios: true})

	m := d.run.Memory
	idle := [3]float64{nan, m.Sidecar.IdleKB / 1024, m.Nginx.IdleKB / 1024}
	loaded := [3]float64{nan, m.Sidecar.LoadedKB / 1024, m.Nginx.LoadedKB / 1024}
	perStream := [3]float64{nan, perStreamKB(m.Sidecar, m.Streams), perStreamKB(m.Nginx, m.Streams)}
	add(row{name: "resident memory, idle", unit: unitMB, vals: idle, ratios: true, goal: "≤ 30 MB", verdict: atMost(idle[iSidecar], 30)})
	add(row{name: fmt.Sprintf("resident memory, %d slow streams", m.Streams), unit: unitMB, vals: loaded, ratios: true})
	add(row{name: "memory per open stream", unit: unitKB, vals: perStream, ratios: true, goal: "≤ 20 KB", verdict: atMost(perStream[iSidecar], 20)})

	var failed [3]float64
	for i, t := range targets {
		failed[i] = nan
		for _, s := range scenarios {
			if r := d.result(s, t); r != nil {
				failed[i] = nanZero(failed[i]) + float64(r.Failed)
			}
		}
	}
	add(row{name: "failed requests, all runs", unit: unitCount, vals: failed})
	return rows
}

func nanZero(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return x
}

// perStreamKB is (RSS at N streams − RSS idle) / N, with N the streams
// the engines saw open when the RSS was sampled (at most the target).
func perStreamKB(m memUsed, target int) float64 {
	n := min(m.Open, target)
	if n <= 0 || m.LoadedKB == 0 {
		return nan
	}
	return (m.LoadedKB - m.IdleKB) / float64(n)
}

// cpuPer is each proxy's CPU time per request of a scenario: the CPU it
// used over warm-up and run, over the requests of both (those of the
// warm-up estimated at the run's throughput).
func cpuPer(d *data, scenario string) [3]float64 {
	var v [3]float64
	for i, t := range targets {
		v[i] = cpuOf(d, scenario, t)
	}
	return v
}

// cpuOf is one target's CPU time per request of a scenario, in µs; NaN
// when not measured.
func cpuOf(d *data, scenario, target string) float64 {
	ticks, ok := d.run.CPUTicks[scenario+"-"+target]
	r := d.result(scenario, target)
	if !ok || r == nil || d.run.ClkTck <= 0 {
		return nan
	}
	if n := r.Throughput * (r.WarmupSeconds + r.Seconds); n > 0 {
		return ticks / float64(d.run.ClkTck) / n * 1e6
	}
	return nan
}

// refHeader heads the reference table: the sidecar and nginx beside the
// minimal Go proxies of bench/refproxy.
var refHeader = []string{"figure", "sidecar", "minimal fasthttp proxy", "httputil.ReverseProxy", "nginx"}

// references is the reference table's rows, each cell a value and its
// ratio to nginx's; nil when the run measured no reference proxy.
func references(d *data) [][]string {
	found := false
	for _, t := range refTargets {
		found = found || d.result("throughput", t) != nil
	}
	if !found {
		return nil
	}
	cols := slices.Concat([]string{"sidecar"}, refTargets, []string{"nginx"})
	m := d.run.Memory
	mem := func(t string) memUsed {
		switch t {
		case "sidecar":
			return m.Sidecar
		case "nginx":
			return m.Nginx
		}
		return m.Refs[t]
	}
	line := func(name, unit string, f func(t string) float64) []string {
		cells := []string{name}
		base := f("nginx")
		for _, t := range cols {
			v := f(t)
			c := value(v, unit)
			if t != "nginx" && !math.IsNaN(v) {
				c += " (" + ratio(v, base) + ")"
			}
			cells = append(cells, c)
		}
		return cells
	}
	conc := 0
	if r := d.result("throughput", "nginx"); r != nil {
		conc = r.Concurrency
	}
	return [][]string{
		line(fmt.Sprintf("throughput, non-streaming, %d workers", conc), unitRPS, func(t string) float64 {
			if r := d.result("throughput", t); r != nil {
				return r.Throughput
			}
			return nan
		}),
		line(fmt.Sprintf("proxy CPU per request, %d workers", conc), unitMicros, func(t string) float64 { return cpuOf(d, "throughput", t) }),
		line("resident memory, idle", unitMB, func(t string) float64 {
			if u := mem(t); u.IdleKB > 0 {
				return u.IdleKB / 1024
			}
			return nan
		}),
		line("memory per open stream", unitKB, func(t string) float64 { return perStreamKB(mem(t), m.Streams) }),
	}
}
