package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/blitzscale/router/internal/loadgen"
)

// Scenarios and targets, in report order. A result file is
// <scenario>-<target>.json.
var (
	scenarios = []string{"throughput", "latency", "ttft", "memory"}
	targets   = []string{"direct", "sidecar", "nginx"}
	// refTargets are bench/refproxy's minimal Go proxies, measured in the
	// throughput and memory scenarios for a table of their own: what Go
	// itself costs here, next to what the sidecar costs.
	refTargets = []string{"ref-fasthttp", "ref-httputil"}
)

// runInfo is run.json, written by run.sh: the machine and the memory
// samples, which blitzbench does not measure.
type runInfo struct {
	Note   string `json:"note"`
	Date   string `json:"date"`
	CPUs   int    `json:"cpus"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	Nginx  string `json:"nginx"`
	NoFile int    `json:"nofile"`
	// ClkTck is the unit of CPUTicks: clock ticks per second.
	ClkTck int `json:"clk_tck"`
	// CPUTicks is the CPU time each proxy used over one run, warm-up
	// included, keyed "<scenario>-<target>".
	CPUTicks        map[string]float64 `json:"cpu_ticks"`
	Quick           int                `json:"quick"`
	SidecarLogLines int                `json:"sidecar_log_lines"`
	// Engines describes the engines of each scenario (TTFT, ITL).
	Engines map[string]string `json:"engines"`
	Memory  struct {
		Streams int `json:"streams"`
		// StreamsWanted is the count asked for, before the open-file
		// limit cut it down to Streams.
		StreamsWanted int     `json:"streams_wanted"`
		Sidecar       memUsed `json:"sidecar"`
		Nginx         memUsed `json:"nginx"`
		// Refs are the reference proxies', by target name.
		Refs map[string]memUsed `json:"refs"`
	} `json:"memory"`
}

// memUsed is one proxy's resident memory, in KiB as /proc reports it.
type memUsed struct {
	IdleKB   float64 `json:"idle_kb"`
	LoadedKB float64 `json:"loaded_kb"`
	Open     int     `json:"open"`      // streams the engines saw open when sampled
	MasterKB float64 `json:"master_kb"` // nginx: the master, not in IdleKB/LoadedKB
	Workers  int     `json:"workers"`
}

// data is everything one run left behind.
type data struct {
	run     runInfo
	results map[string]map[string]*loadgen.Result // scenario -> target -> result
	dir     string
}

// result returns a run's result, or nil when it is missing.
func (d *data) result(scenario, target string) *loadgen.Result {
	return d.results[scenario][target]
}

func load(dir string) (*data, error) {
	d := &data{results: map[string]map[string]*loadgen.Result{}, dir: dir}
	if err := readJSON(filepath.Join(dir, "run.json"), &d.run); err != nil {
		return nil, err
	}
	for _, s := range scenarios {
		d.results[s] = map[string]*loadgen.Result{}
		for _, t := range slices.Concat(targets, refTargets) {
			var r loadgen.Result
			err := readJSON(filepath.Join(dir, s+"-"+t+".json"), &r)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				continue // a scenario may skip a target (memory has no direct)
			case err != nil:
				return nil, err
			}
			d.results[s][t] = &r
		}
	}
	return d, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
