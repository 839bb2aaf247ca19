package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// environment describes the machine and the setup of a run, so that a
// reader can tell a busy machine's numbers from a quiet one's.
type environment struct {
	GoVersion    string            `json:"go_version"`
	CPUs         int               `json:"cpus"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvgEnd   string            `json:"loadavg_end"`
	WallSeconds  float64           `json:"wall_s"`
	CapacityRPS  float64           `json:"capacity_rps_no_hits"`
	MeanTokens   float64           `json:"mean_max_tokens"`
	Options      map[string]string `json:"options"`
	Engines      []engineSpec      `json:"engines"`
	Workload     workloadConfig    `json:"workload"`
}

type report struct {
	Env     environment `json:"environment"`
	Results []result    `json:"results"`
	Goals   []goal      `json:"goals"`
}

// goal is one target of issue 4 with the measured value.
type goal struct {
	Name   string  `json:"name"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
}

func (r report) find(scenario, topology, policy string, caps bool) (result, bool) {
	for _, x := range r.Results {
		if x.Scenario == scenario && x.Topology == topology && x.Policy == policy && x.Caps == caps {
			return x, true
		}
	}
	return result{}, false
}

func (r report) main() []result {
	var out []result
	for _, x := range r.Results {
		if x.Scenario == "main" {
			out = append(out, x)
		}
	}
	return out
}

// goals compares the runs against the targets of issue 4 and adds the
// ratios the report states. Target "" marks a ratio reported without a goal.
func (r report) goals() []goal {
	var gs []goal
	add := func(name, target string, v float64, met bool, detail string, args ...any) {
		gs = append(gs, goal{Name: name, Target: target, Value: v, Met: met, Detail: fmt.Sprintf(detail, args...)})
	}
	for _, topo := range []string{"single", "fleet"} {
		rr, ok1 := r.find("main", topo, "round-robin", false)
		au, ok2 := r.find("main", topo, "auto", false)
		if ok1 && ok2 {
			v := ratio(rr.E2E.P99, au.E2E.P99)
			add(topo+": round-robin p99 e2e / auto p99 e2e", ">= 2", v, v >= 2, "%.0f vs %.0f ms", rr.E2E.P99, au.E2E.P99)
			add(topo+": round-robin p99 TTFT / auto p99 TTFT", "", ratio(rr.TTFT.P99, au.TTFT.P99), true, "%.0f vs %.0f ms", rr.TTFT.P99, au.TTFT.P99)
			add(topo+": round-robin p50 TTFT / auto p50 TTFT", "", ratio(rr.TTFT.P50, au.TTFT.P50), true, "%.0f vs %.0f ms", rr.TTFT.P50, au.TTFT.P50)
			add(topo+": auto hit rate / round-robin hit rate", "", ratio(au.HitRate, rr.HitRate), true, "%.3f vs %.3f", au.HitRate, rr.HitRate)
		}
		if af, ok := r.find("main", topo, "affinity", false); ok && ok2 {
			add(topo+": affinity p99 e2e / auto p99 e2e (same picker: noise)", "", ratio(af.E2E.P99, au.E2E.P99), true, "%.0f vs %.0f ms", af.E2E.P99, au.E2E.P99)
		}
		rrc, ok3 := r.find("main", topo, "round-robin", true)
		auc, ok4 := r.find("main", topo, "auto", true)
		if ok3 && ok4 {
			add(topo+", caps: round-robin p99 e2e / auto p99 e2e", "", ratio(rrc.E2E.P99, auc.E2E.P99), true, "%.0f vs %.0f ms", rrc.E2E.P99, auc.E2E.P99)
		}
		if ok2 && ok4 {
			add(topo+": auto p99 e2e without caps / with caps", "", ratio(au.E2E.P99, auc.E2E.P99), true, "%.0f vs %.0f ms", au.E2E.P99, auc.E2E.P99)
		}
	}
	d, ok1 := r.find("main", "direct", "client-rr", false)
	au, ok2 := r.find("main", "single", "auto", false)
	if ok1 && ok2 {
		add("no sidecar p99 e2e / single auto p99 e2e", "", ratio(d.E2E.P99, au.E2E.P99), true,
			"%.0f vs %.0f ms; %d no-sidecar requests still running at the cut-off are not in the p99", d.E2E.P99, au.E2E.P99, d.Incomplete)
	}
	if f, ok := r.find("main", "fleet", "auto", false); ok && ok2 {
		v := ratio(f.HitRate, au.HitRate)
		add("auto: fleet hit rate / single-sidecar hit rate", ">= 0.9", v, v >= 0.9, "%.3f vs %.3f", f.HitRate, au.HitRate)
	}
	un, ok := r.find("priority-unloaded", "single", "auto", false)
	for _, caps := range []bool{false, true} {
		fl, ok2 := r.find("priority-flood", "single", "auto", caps)
		if !ok || !ok2 {
			continue
		}
		h0, h1 := un.ByPriority["high"], fl.ByPriority["high"]
		v := ratio(h1.E2E.P99, h0.E2E.P99)
		add("flood ("+fl.label()+"): high p99 e2e / unloaded high p99 e2e", "<= 2", v, v > 0 && v <= 2 && h1.OK == h1.Sent,
			"%.0f vs %.0f ms; TTFT p99 %.0f vs %.0f ms; %d of %d high requests not ok", h1.E2E.P99, h0.E2E.P99, h1.TTFT.P99, h0.TTFT.P99, h1.Sent-h1.OK, h1.Sent)
	}
	return gs
}

// table is the main comparison, as printed and as pasted into the report.
func (r report) table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "topology\tpolicy\tok\tshed\t503\terr\tincompl\tTTFT p50\tTTFT p99\te2e p50\te2e p99\treq/s\thit rate\tmax/mean\tspill\t")
	for _, x := range r.main() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.3f\t%.2f\t%s\t\n",
			x.Topology, x.label(), x.OK, x.Shed, x.Unavailable, x.Errors, x.Incomplete,
			x.TTFT.P50, x.TTFT.P99, x.E2E.P50, x.E2E.P99, x.Throughput, x.HitRate, x.Balance, spill(x))
	}
	_ = tw.Flush()
	b.WriteString("(latencies in ms from the intended send time; max/mean = requests per engine; spill = affinity-spill share of routed requests)\n")
	if pr := r.priorityRows(); len(pr) > 0 {
		b.WriteString("\npriority experiment (single sidecar):\n")
		tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "scenario\tpolicy\tclass\tsent\tok\tshed\t503\terr\tincompl\tTTFT p50\tTTFT p99\te2e p50\te2e p99\t")
		for _, row := range pr {
			fmt.Fprintln(tw, row)
		}
		_ = tw.Flush()
	}
	b.WriteString("\nper engine: share of requests, prefix-cache hit rate, p99 e2e (ms) of the requests it served:\n")
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "topology\tpolicy\t"
	for _, e := range engines {
		hdr += e.ID + "\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, x := range r.main() {
		row := x.Topology + "\t" + x.label() + "\t"
		for _, e := range x.Engines {
			row += fmt.Sprintf("%.0f%% hit %.2f p99 %.0f\t", 100*e.Share, e.PrefixHitRate, e.E2EP99)
		}
		fmt.Fprintln(tw, row)
	}
	_ = tw.Flush()
	return b.String()
}

func (r report) priorityRows() []string {
	var rows []string
	for _, x := range r.Results {
		if x.Scenario == "main" {
			continue
		}
		for _, class := range []string{"high", "normal", "low"} {
			c, ok := x.ByPriority[class]
			if !ok {
				continue
			}
			rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t",
				x.Scenario, x.label(), class, c.Sent, c.OK, c.Shed, c.Unavailable, c.Errors, c.Incomplete,
				c.TTFT.P50, c.TTFT.P99, c.E2E.P50, c.E2E.P99))
		}
	}
	return rows
}

func spill(x result) string {
	total := 0
	for _, n := range x.Routes {
		total += n
	}
	if x.Routes["affinity"]+x.Routes["affinity-spill"] == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*ratio(float64(x.Routes["affinity-spill"]), float64(total)))
}

func (r report) goalsText() string {
	var b strings.Builder
	b.WriteString("\ngoals and ratios:\n")
	for _, g := range r.goals() {
		mark := "met"
		if !g.Met {
			mark = "NOT met"
		}
		if g.Target == "" {
			mark = ""
		}
		target := ""
		if g.Target != "" {
			target = "target " + g.Target
		}
		fmt.Fprintf(&b, "  %-58s %6.2f  %-12s %-8s %s\n", g.Name, g.Value, target, mark, g.Detail)
	}
	return b.String()
}

// write saves results.json, report.md and the plot into dir.
func (r report) write(dir string) error {
	r.Goals = r.goals()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := writePlot(filepath.Join(dir, plotFile), r.main()); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.markdown()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s, %s and %s\n", filepath.Join(dir, "results.json"), filepath.Join(dir, "report.md"), filepath.Join(dir, plotFile))
	return nil
}

// markdown renders the report; the tables are the printed ones in code
// blocks, so that the report and the terminal agree to the digit.
func (r report) markdown() string {
	e := r.Env
	var b strings.Builder
	b.WriteString("# Routing experiment report\n\n")
	fmt.Fprintf(&b, "Generated by `go run ./bench/routing` (`make bench-routing`) on %s. %s, %d CPUs; load average %s at the start and %s at the end; %.0f s in all.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), e.GoVersion, e.CPUs, e.LoadAvgStart, e.LoadAvgEnd, e.WallSeconds)
	fmt.Fprintf(&b, "Options: `%s`.\n\n", optionsLine(e.Options))
	b.WriteString("## Setup\n\n| engine | models | TTFT | ITL | slots | prefix cache (blocks of 64 B) |\n|---|---|---|---|---|---|\n")
	for _, s := range e.Engines {
		fmt.Fprintf(&b, "| %s | %s | %v | %v | %d | %d |\n", s.ID, strings.Join(s.Models, ", "), s.TTFT, s.ITL, s.Slots, s.CacheBlocks)
	}
	w := e.Workload
	fmt.Fprintf(&b, "\nCapacity without prefix hits: %.1f req/s (mean max_tokens %.1f). Workload: streaming chat, %.0f%% %s / %.0f%% %s; "+
		"%d and %d shared %d-byte documents, Zipf s=%.1f; %.0f%% unique prompts; %.0f%% high priority; "+
		"bursts: the rate alternates between %.1f× and %.1f× the mean every %v; max_tokens log-normal (median %.0f, σ %.1f, %d–%d).\n\n",
		e.CapacityRPS, e.MeanTokens, 100*(1-w.ModelBShare), modelA, 100*w.ModelBShare, modelB, w.DocsA, w.DocsB, w.DocBytes, w.ZipfS,
		100*w.UniqueShare, 100*w.HighShare, w.BurstHigh, w.BurstLow, w.BurstPeriod, w.TokensMedian, w.TokensSigma, w.TokensMin, w.TokensMax)
	b.WriteString("## Results\n\n```\n" + r.table() + "```\n\n")
	fmt.Fprintf(&b, "![p50 and p99 latency per policy](%s)\n\n", plotFile)
	b.WriteString("## Goals of issue 4 and ratios\n\n| measure | value | target | verdict | detail |\n|---|---|---|---|---|\n")
	for _, g := range r.goals() {
		verdict := map[bool]string{true: "met", false: "**not met**"}[g.Met]
		if g.Target == "" {
			verdict = "—"
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s | %s | %s |\n", g.Name, g.Value, g.Target, verdict, g.Detail)
	}
	b.WriteString("\nround-robin through the sidecar is the plain-proxy comparison; `direct/client-rr` sends straight to the engines with no sidecar at all. " +
		"See docs/routing-experiment.md for how to read these numbers.\n")
	return b.String()
}

func optionsLine(m map[string]string) string {
	keys := []string{"duration", "warmup", "parallel", "seed", "load", "fleet", "load_period", "high_load", "flood_load", "caps_policies"}
	var parts []string
	for _, k := range keys {
		v := m[k]
		if v == "" {
			v = "''"
		}
		parts = append(parts, fmt.Sprintf("-%s %s", strings.ReplaceAll(k, "_", "-"), v))
	}
	return strings.Join(parts, " ")
}
