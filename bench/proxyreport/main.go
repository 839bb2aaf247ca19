// Command proxyreport turns the results of bench/run.sh (blitzbench JSON
// files, memory samples and profile summaries) into the side-by-side table
// of issue 6: it prints the table and writes report.md and a latency plot.
//
// It only reads and formats: every measurement is taken by run.sh and
// blitzbench, so the report can be regenerated from a kept run.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	in := flag.String("in", "bench/out/proxy", "directory of run.sh's raw results")
	out := flag.String("out", "bench/out", "directory for report.md and proxy-latency.png")
	flag.Parse()
	if err := run(*in, *out, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "proxyreport: %v\n", err)
		os.Exit(1)
	}
}

// run prints the table to w and writes the report and plot into out.
func run(in, out string, w io.Writer) error {
	d, err := load(in)
	if err != nil {
		return err
	}
	rows := figures(d)
	if err := writeText(w, d, rows); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := plotLatency(d, filepath.Join(out, plotFile)); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	f, err := os.Create(filepath.Join(out, "report.md"))
	if err != nil {
		return err
	}
	if err := writeMarkdown(f, d, rows, in); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
