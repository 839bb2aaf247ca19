package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blitzscale/router/internal/loadgen"
)

// summary is a latency summary whose percentiles are p50 and p99 µs.
func summary(p50, p99 float64) *loadgen.Summary {
	return &loadgen.Summary{Count: 100, P50: p50, P99: p99, Max: p99 * 2,
		Curve: []loadgen.Point{{Percentile: 50, Micros: p50}, {Percentile: 99, Micros: p99}, {Percentile: 100, Micros: p99 * 2}}}
}

// writeRun lays out a run directory as bench/run.sh leaves it.
func writeRun(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	put := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tp := map[string]float64{"direct": 20000, "sidecar": 9000, "nginx": 12000}
	lat := map[string]float64{"direct": 100, "sidecar": 140, "nginx": 130}
	ttft := map[string]float64{"direct": 20000, "sidecar": 20150, "nginx": 20300}
	for _, tg := range targets {
		put("throughput-"+tg+".json", loadgen.Result{Mode: "closed", Concurrency: 128, Completed: 10, Throughput: tp[tg],
			WarmupSeconds: 2, Seconds: 200000/tp[tg] - 2, Latency: *summary(1000, 2000)})
		put("latency-"+tg+".json", loadgen.Result{Mode: "open", Rate: 1000, Completed: 10, Latency: *summary(lat[tg], 4*lat[tg]),
			Service: summary(lat[tg]/2, 2*lat[tg]), SendLag: summary(50, 500)})
		put("ttft-"+tg+".json", loadgen.Result{Mode: "closed", Concurrency: 1000, Stream: true, Completed: 10, Failed: 1,
			Errors: map[string]int64{"status_502": 1}, Latency: *summary(800000, 900000), TTFT: summary(ttft[tg], ttft[tg]+100), ITL: summary(50000, 51000)})
	}
	for tg, v := range map[string]float64{"ref-fasthttp": 11000, "ref-httputil": 5000} {
		put("throughput-"+tg+".json", loadgen.Result{Mode: "closed", Concurrency: 128, Completed: 10, Throughput: v,
			WarmupSeconds: 2, Seconds: 8, Latency: *summary(1000, 2000)})
	}
	var run runInfo
	run.Note, run.CPUs, run.NoFile, run.ClkTck = "test note", 2, 20000, 100
	// 20000 req/s × 10 s = 200000 requests; 300 ticks = 3 s: 15 µs each.
	run.CPUTicks = map[string]float64{"throughput-sidecar": 300, "throughput-nginx": 100, "throughput-ref-fasthttp": 220}
	run.Memory.Streams, run.Memory.StreamsWanted = 9500, 10000
	run.Memory.Sidecar = memUsed{IdleKB: 20 * 1024, LoadedKB: 20*1024 + 9500*40, Open: 9500}
	run.Memory.Nginx = memUsed{IdleKB: 10 * 1024, LoadedKB: 10*1024 + 9500*10, Open: 9500, Workers: 2}
	run.Memory.Refs = map[string]memUsed{"ref-fasthttp": {IdleKB: 8 * 1024, LoadedKB: 8*1024 + 9500*30, Open: 9500}}
	put("run.json", run)
	if err := os.MkdirAll(filepath.Join(dir, "prof"), 0o755); err != nil {
		t.Fatal(err)
	}
	top := "File: sidecar.test\nType: cpu\nDuration: 3s\n      flat  flat%\n  10ms 50% syscall.Syscall6\n"
	if err := os.WriteFile(filepath.Join(dir, "prof", "cpu-top.txt"), []byte(top), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFigures(t *testing.T) {
	d, err := load(writeRun(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]row{}
	for _, r := range figures(d) {
		got[r.name] = r
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
	tests := []struct {
		name    string
		sidecar float64
		verdict verdict
	}{
		{"throughput, non-streaming, 128 workers", 9000, missed},
		{"added latency p50 vs direct", 40, met},
		{"added latency p99 vs direct", 160, met},
		{"added service time p50 (from actual send)", 20, noGoal},
		{"added TTFT p99 vs direct", 150, met},
		{"resident memory, idle", 20, met},
		{"memory per open stream", 40, missed},
		{"failed requests, all runs", 1, noGoal},
		{"proxy CPU per request, 128 workers", 15, noGoal},
	}
	for _, tt := range tests {
		r, ok := got[tt.name]
		if !ok {
			t.Errorf("no row %q", tt.name)
			continue
		}
		if !near(r.vals[iSidecar], tt.sidecar) || r.verdict != tt.verdict {
			t.Errorf("%s: sidecar %v verdict %v; want %v %v", tt.name, r.vals[iSidecar], r.verdict, tt.sidecar, tt.verdict)
		}
	}
	if c := got["throughput, non-streaming, 128 workers"].cells(); c[4] != "0.75×" || c[5] != "0.45×" {
		t.Errorf("throughput ratios %q %q; want 0.75× 0.45×", c[4], c[5])
	}
	if v := got["added TTFT p50 vs direct"].vals; !math.IsNaN(v[iDirect]) || !near(v[iNginx], 300) {
		t.Errorf("added TTFT p50 %v; want direct blank, nginx 300", v)
	}
}

func TestReferences(t *testing.T) {
	d, err := load(writeRun(t))
	if err != nil {
		t.Fatal(err)
	}
	got := references(d)
	want := [][]string{
		// 11000 req/s × 10 s with 2.2 s of CPU: 20 µs a request; nginx 5 µs.
		{"throughput, non-streaming, 128 workers", "9000 req/s (0.75×)", "11000 req/s (0.92×)", "5000 req/s (0.42×)", "12000 req/s"},
		{"proxy CPU per request, 128 workers", "15µs (3.00×)", "20µs (4.00×)", "—", "5µs"},
		{"resident memory, idle", "20.0 MB (2.00×)", "8.0 MB (0.80×)", "—", "10.0 MB"},
		{"memory per open stream", "40.0 KB (4.00×)", "30.0 KB (3.00×)", "—", "10.0 KB"},
	}
	if len(got) != len(want) {
		t.Fatalf("references:\n%q\nwant\n%q", got, want)
	}
	for i := range want {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("row %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}

	// A run without reference proxies has no reference table.
	for _, tg := range refTargets {
		delete(d.results["throughput"], tg)
	}
	if got := references(d); got != nil {
		t.Errorf("references without reference runs: %q", got)
	}
}

func TestRunWritesReportAndPlot(t *testing.T) {
	in, out := writeRun(t), t.TempDir()
	var table strings.Builder
	if err := run(in, out, &table); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| throughput, non-streaming, 128 workers | 20000 req/s | 9000 req/s | 12000 req/s | 0.75× | 0.45× | ≥ 1.0× nginx | **MISSED** |",
		"> **test note**", "holds 9500 proxied streams", "## Reference Go proxies", "| memory per open stream | 40.0 KB (4.00×) | 30.0 KB (3.00×) | — | 10.0 KB |", "status_502=1", "syscall.Syscall6", "![latency percentiles"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if !strings.Contains(table.String(), "memory per open stream") {
		t.Errorf("printed table lacks the memory row:\n%s", table.String())
	}
	if strings.Contains(string(md), "File: sidecar.test") {
		t.Error("report.md keeps pprof's preamble")
	}
	if st, err := os.Stat(filepath.Join(out, plotFile)); err != nil || st.Size() < 10000 {
		t.Errorf("plot: %v (%v bytes)", err, st)
	}
}
