// Command blitzbench is a load generator for OpenAI-compatible endpoints:
// open or closed loop, streaming or not. It prints latency percentiles
// (end to end, time to first token, inter-token) and throughput, and can
// write them as JSON. See docs/bench.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/blitzscale/router/internal/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: exit code 0 on success, 1 when the run
// or the JSON output failed, 2 on bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg loadgen.Config
	var urls, jsonOut string
	fs := flag.NewFlagSet("blitzbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&urls, "url", "", "base URL(s) ending in the API version, comma-separated; requests go round-robin (e.g. http://127.0.0.1:8089/v1)")
	fs.StringVar(&cfg.Model, "model", "", "model field of every request (required)")
	fs.StringVar(&cfg.Mode, "mode", loadgen.ModeClosed, "open (fixed --rate) or closed (fixed --concurrency)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: requests per second, sent on schedule whatever the responses")
	fs.IntVar(&cfg.Concurrency, "concurrency", loadgen.DefaultConcurrency, "closed loop: workers, each with one request at a time")
	fs.DurationVar(&cfg.Duration, "duration", 0, "how long to send and measure (required)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "same load, not measured, before --duration")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "closed loop: spread worker starts over this time")
	fs.DurationVar(&cfg.Drain, "drain", loadgen.DefaultDrain, "time requests in flight at the end may finish before they are cut (negative: cut at once)")
	fs.DurationVar(&cfg.Timeout, "timeout", loadgen.DefaultTimeout, "bound on one request")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", loadgen.DefaultMaxInflight, "open loop: bound on requests in flight (sends past it wait, and the wait counts)")
	fs.BoolVar(&cfg.Stream, "stream", false, "ask for server-sent events and time the tokens")
	fs.IntVar(&cfg.MaxTokens, "max-tokens", loadgen.DefaultMaxTokens, "max_tokens of every request")
	fs.IntVar(&cfg.PromptBytes, "prompt-bytes", loadgen.DefaultPromptBytes, "prompt size in bytes")
	fs.StringVar(&cfg.Endpoint, "endpoint", loadgen.EndpointChat, "chat (/chat/completions) or completions (/completions)")
	fs.BoolVar(&cfg.SamePrompt, "same-prompt", false, "send one identical prompt (default: each starts with a unique number)")
	fs.StringVar(&jsonOut, "json", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blitzbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for u := range strings.SplitSeq(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.URLs = append(cfg.URLs, u)
		}
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "blitzbench: %v\n", err)
		if errors.Is(err, loadgen.ErrInvalidConfig) {
			return 2
		}
		return 1
	}
	if err := res.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "blitzbench: %v\n", err)
		return 1
	}
	if jsonOut != "" {
		if err := writeJSON(jsonOut, res); err != nil {
			fmt.Fprintf(stderr, "blitzbench: %v\n", err)
			return 1
		}
	}
	return 0
}

func writeJSON(path string, res *loadgen.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := res.WriteJSON(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
