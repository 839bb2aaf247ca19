package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/blitzscale/router/internal/loadgen"
)

// value formats one table cell; "—" where there is nothing to show.
func value(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch unit {
	case unitMicros:
		if v < 0 {
			return "−" + loadgen.FormatMicros(-v)
		}
		return loadgen.FormatMicros(v)
	case unitRPS:
		return fmt.Sprintf("%.0f req/s", v)
	case unitMB:
		return fmt.Sprintf("%.1f MB", v)
	case unitKB:
		return fmt.Sprintf("%.1f KB", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// ratio formats a/b as "0.93×"; "—" unless both are positive numbers.
func ratio(a, b float64) string {
	if !(a > 0 && b > 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (v verdict) String() string {
	switch v {
	case met:
		return "met"
	case missed:
		return "MISSED"
	case unknown:
		return "not measured"
	}
	return ""
}

// cells returns a row as the table's columns: figure, direct, sidecar,
// nginx, sidecar/nginx, sidecar/direct, goal, verdict. The ratio of two
// added latencies is shown too: it compares the cost of the two hops.
func (r row) cells() []string {
	sn, sd := "—", "—"
	if r.ratios || strings.HasPrefix(r.name, "added") {
		sn = ratio(r.vals[iSidecar], r.vals[iNginx])
	}
	if r.ratios {
		sd = ratio(r.vals[iSidecar], r.vals[iDirect])
	}
	return []string{r.name, value(r.vals[iDirect], r.unit), value(r.vals[iSidecar], r.unit),
		value(r.vals[iNginx], r.unit), sn, sd, r.goal, r.verdict.String()}
}

var header = []string{"figure", "direct", "sidecar", "nginx", "sidecar/nginx", "sidecar/direct", "goal (sidecar)", ""}

// writeText prints the tables with aligned columns, for the terminal.
func writeText(w io.Writer, d *data, rows []row) error {
	all := [][]string{header}
	for _, r := range rows {
		all = append(all, r.cells())
	}
	var b strings.Builder
	if d.run.Note != "" {
		fmt.Fprintf(&b, "\n%s\n\n", d.run.Note)
	}
	aligned(&b, all)
	if refs := references(d); refs != nil {
		b.WriteString("\nReference Go proxies (bench/refproxy: round-robin and nothing else), ratios to nginx:\n\n")
		aligned(&b, append([][]string{refHeader}, refs...))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// aligned writes rows of cells as columns: the first left-aligned, the
// others right-aligned.
func aligned(b *strings.Builder, all [][]string) {
	var width []int
	for _, cs := range all {
		for i, c := range cs {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	for _, cs := range all {
		for i, c := range cs {
			pad := width[i] - len([]rune(c))
			if i == 0 {
				b.WriteString(c + strings.Repeat(" ", pad))
			} else {
				b.WriteString("  " + strings.Repeat(" ", pad) + c)
			}
		}
		b.WriteString("\n")
	}
}
