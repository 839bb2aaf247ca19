package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testWorkload(seed uint64) workloadConfig {
	c := defaultWorkload
	c.Seed, c.Rate, c.Duration, c.Sidecars = seed, 50, 60*time.Second, 4
	return c
}

func TestGenerateIsReproducible(t *testing.T) {
	a, b := generate(testWorkload(7)), generate(testWorkload(7))
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("same seed, different workloads (-first +second):\n%s", diff)
	}
	if c := generate(testWorkload(8)); cmp.Equal(a.Requests, c.Requests) {
		t.Fatal("seeds 7 and 8 gave the same workload")
	}
}

func TestGenerateShape(t *testing.T) {
	w := generate(testWorkload(1))
	n := float64(len(w.Requests))
	if rate := n / 60; rate < 45 || rate > 55 {
		t.Errorf("realised rate %.1f req/s, want about 50", rate)
	}
	var high, unique, nB int
	sidecars := map[int]bool{}
	for i, r := range w.Requests {
		if i > 0 && r.At < w.Requests[i-1].At {
			t.Fatalf("request %d planned before its predecessor", i)
		}
		if r.MaxTokens < w.Config.TokensMin || r.MaxTokens > w.Config.TokensMax {
			t.Fatalf("request %d: max_tokens %d outside [%d, %d]", i, r.MaxTokens, w.Config.TokensMin, w.Config.TokensMax)
		}
		sidecars[r.Sidecar] = true
		if r.Priority == "high" {
			high++
		}
		if r.Doc < 0 {
			unique++
		}
		if r.Model == modelB {
			nB++
		}
	}
	for name, got := range map[string]float64{"high": float64(high) / n, "unique": float64(unique) / n, "modelB": float64(nB) / n} {
		want := map[string]float64{"high": 0.1, "unique": 0.1, "modelB": 0.2}[name]
		if got < want*0.8 || got > want*1.2 {
			t.Errorf("%s share %.3f, want about %.2f", name, got, want)
		}
	}
	if len(sidecars) != 4 {
		t.Errorf("requests spread over %d sidecars, want 4", len(sidecars))
	}
}

// The sidecar keys prefix affinity on the first 256 bytes of the messages
// JSON: each shared document must give its own key, and every request on
// the same document the same one.
func TestDocumentsKeyAffinityApart(t *testing.T) {
	w := generate(testWorkload(1))
	keys := map[string]int{}
	for _, r := range w.Requests {
		if r.Doc < 0 {
			continue
		}
		b, err := json.Marshal([]chatMessage{{Role: "system", Content: r.System}, {Role: "user", Content: r.User}})
		if err != nil {
			t.Fatal(err)
		}
		k := r.Model + string(b[:256])
		if d, ok := keys[k]; ok && d != r.Doc {
			t.Fatalf("documents %d and %d share an affinity key", d, r.Doc)
		}
		keys[k] = r.Doc
	}
	if want := defaultWorkload.DocsA + defaultWorkload.DocsB; len(keys) != want {
		t.Errorf("%d affinity keys, want one per document: %d", len(keys), want)
	}
}

func TestFloodWorkloadMergesInOrder(t *testing.T) {
	c := testWorkload(3)
	w := floodWorkload(c, 10, 40)
	var high, low int
	for i, r := range w.Requests {
		if r.Seq != i {
			t.Fatalf("request %d numbered %d", i, r.Seq)
		}
		switch r.Priority {
		case "high":
			high++
		case "low":
			low++
		default:
			t.Fatalf("request %d has priority %q", i, r.Priority)
		}
	}
	if !slices.IsSortedFunc(w.Requests, func(a, b request) int { return int(a.At - b.At) }) {
		t.Fatal("merged stream out of time order")
	}
	if ratio := float64(low) / float64(high); ratio < 3 || ratio > 5 {
		t.Errorf("low/high = %.1f, want about 4", ratio)
	}
}

// TestSmoke runs the whole experiment at toy scale: engines, embedded etcd,
// a single sidecar and a fleet of two, the priority runs, and every output.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and runs the experiment for about 15s")
	}
	dir := t.TempDir()
	o, err := parseFlags([]string{"-duration", "1s", "-warmup", "500ms", "-drain", "2s", "-fleet", "2",
		"-policies", "round-robin,auto", "-caps-policies", "auto", "-load", "0.3", "-flood-load", "0.5", "-out", dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	// direct, 2 topologies × (2 policies + 1 with caps), 3 priority runs.
	if len(rep.Results) != 1+2*3+3 {
		t.Fatalf("%d results, want 10", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.OK == 0 || r.Errors > 0 {
			t.Errorf("%s %s: %d ok, %d errors", r.Scenario, r.Topology+"/"+r.label(), r.OK, r.Errors)
		}
	}
	for _, f := range []string{"report.md", plotFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
}
