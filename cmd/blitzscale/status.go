package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blitzscale/router/sidecar"
)

func runStatus(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("status", e)
	var (
		config, addr string
		asJSON       bool
		watch        time.Duration
	)
	fs.StringVar(&config, "config", "", "YAML file whose keys are these flag names")
	fs.StringVar(&addr, "sidecar", "http://"+sidecar.DefaultListen, "URL of the sidecar to ask")
	fs.BoolVar(&asJSON, "json", false, "print the raw /state JSON")
	fs.DurationVar(&watch, "watch", 0, "refresh in place at this interval (0: print once)")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	if watch < 0 {
		return usageErr("watch: must be >= 0")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		raw, st, err := fetchState(ctx, client, strings.TrimSuffix(addr, "/"))
		if err != nil {
			return err
		}
		if watch > 0 {
			fmt.Fprint(e.stdout, "\033[H\033[2J") // clear the screen, cursor home
		}
		if asJSON {
			_, _ = e.stdout.Write(raw)
		} else {
			printState(e.stdout, st)
		}
		if watch == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watch):
		}
	}
}

func fetchState(ctx context.Context, c *http.Client, base string) ([]byte, sidecar.State, error) {
	var st sidecar.State
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/state", nil)
	if err != nil {
		return nil, st, usageErr("sidecar: %v", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, st, fmt.Errorf("asking %s: %w", base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, st, fmt.Errorf("reading %s/state: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, st, fmt.Errorf("%s/state: %s: %s", base, resp.Status, strings.TrimSpace(string(raw)))
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, st, fmt.Errorf("%s/state: %w", base, err)
	}
	return raw, st, nil
}

func printState(w io.Writer, st sidecar.State) {
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	stale := ""
	if st.Stale {
		stale = " (stale: registry unreachable)"
	}
	fmt.Fprintf(w, "sidecar %s  %s  policy %s  source %s%s  synced %s\n\n", st.SidecarID, ready, st.Policy, st.Source, stale, st.SyncedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INSTANCE\tMODELS\tHEALTH\tBREAKER\tIN-FLIGHT\tGLOBAL\tEWMA TTFT\tREQUESTS\tERRORS")
	for _, in := range st.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1fms\t%d\t%d\n", in.ID, strings.Join(in.Models, ","), in.Health, in.Breaker,
			in.InFlight, in.GlobalInFlight, in.EWMATTFTMillis, in.Requests, in.Errors)
	}
	_ = tw.Flush()
}
