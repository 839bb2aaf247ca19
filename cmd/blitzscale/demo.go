package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/static"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/sidecar"
)

// demoEngines are the simulated fleet of the demo: three engines of
// different speeds serving two models, one of them on two engines.
var demoEngines = []llmsim.Config{
	{ID: "gpu-a-0", Models: []string{"llama-3.1-8b"}, TTFT: 40 * time.Millisecond, ITL: 8 * time.Millisecond, MaxConcurrency: 32},
	{ID: "gpu-b-0", Models: []string{"llama-3.1-8b", "qwen-2.5-7b"}, TTFT: 80 * time.Millisecond, ITL: 15 * time.Millisecond, MaxConcurrency: 16},
	{ID: "gpu-c-0", Models: []string{"qwen-2.5-7b"}, TTFT: 60 * time.Millisecond, ITL: 10 * time.Millisecond, MaxConcurrency: 32},
}

func runDemo(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("demo", e)
	var config, listen, stateDir, policy, logLevel string
	fs.StringVar(&config, "config", "", "YAML file whose keys are these flag names")
	fs.StringVar(&listen, "listen", sidecar.DefaultListen, "address of the demo's sidecar")
	fs.StringVar(&stateDir, "state-dir", "", "where the demo keeps its registry data (default: a new temporary directory)")
	fs.StringVar(&policy, "policy", sidecar.DefaultPolicy, "routing policy")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	if _, err := parseLevel(logLevel); err != nil {
		return usageErr("log-level: %v", err)
	}
	if host, _, err := net.SplitHostPort(listen); err != nil || !isLoopback(host) {
		return usageErr("listen: %q: the demo serves on a loopback host:port only", listen)
	}
	if stateDir == "" {
		dir, err := os.MkdirTemp("", "blitzscale-demo-")
		if err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
		defer os.RemoveAll(dir)
		stateDir = dir
	}
	logger := newLogger(e, logLevel, "text")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var instances []discovery.Instance
	for _, cfg := range demoEngines {
		sim, err := llmsim.New(cfg)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("engine %s: %w", cfg.ID, err)
		}
		wg.Go(func() { _ = serveUntilDone(ctx, ln, sim, time.Second) })
		instances = append(instances, discovery.Instance{ID: cfg.ID, Address: ln.Addr().String(), Models: cfg.Models,
			Meta: map[string]string{"engine": "llmsim", "zone": "demo"}})
	}
	file := filepath.Join(stateDir, "instances.json")
	if err := writeInstances(file, instances); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w (is another sidecar running? try --listen 127.0.0.1:0)", err)
	}
	src := static.New(file)
	src.Logger = logger
	printDemoBanner(e.stdout, ln.Addr().String(), instances, file)
	return serveSidecar(ctx, sidecar.Config{SidecarID: "demo", Policy: policy, Logger: logger, ShutdownTimeout: 5 * time.Second}, ln, src)
}

func writeInstances(path string, instances []discovery.Instance) error {
	b, err := json.MarshalIndent(instances, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printDemoBanner(w io.Writer, addr string, instances []discovery.Instance, file string) {
	var b strings.Builder
	fmt.Fprintf(&b, "BlitzScale demo: a sidecar on http://%s routing to %d simulated engines\n\n", addr, len(instances))
	for _, in := range instances {
		fmt.Fprintf(&b, "  %-8s %-21s %s\n", in.ID, in.Address, strings.Join(in.Models, ", "))
	}
	fmt.Fprintf(&b, "\nRegistry (static file, edit it to see routing follow): %s\n", file)
	fmt.Fprintf(&b, `
Try it:

  curl -s http://%[1]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"llama-3.1-8b","messages":[{"role":"user","content":"Hello"}]}'

  curl -sN http://%[1]s/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model":"qwen-2.5-7b","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

  blitzscale status --sidecar http://%[1]s      (or: curl -s http://%[1]s/state)

OpenAI SDK (Python):

  from openai import OpenAI
  client = OpenAI(base_url="http://%[1]s/v1", api_key="unused")
  stream = client.chat.completions.create(model="llama-3.1-8b", stream=True,
      messages=[{"role": "user", "content": "Hello"}])
  for chunk in stream:
      print(chunk.choices[0].delta.content or "", end="", flush=True)

Ctrl-C stops the demo.
`, addr)
	_, _ = io.WriteString(w, b.String())
}
