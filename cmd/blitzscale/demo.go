package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/etcd"
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
	fs.StringVar(&stateDir, "state-dir", "", "where the demo's embedded etcd keeps its data (default: a new temporary directory)")
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

	// Close the registry last: after the sidecar and every registration.
	reg := registryFlags{registry: "embedded", service: etcd.DefaultService, etcdPrefix: etcd.DefaultPrefix,
		etcdEndpoints: "127.0.0.1:0", stateDir: stateDir}
	conn, err := reg.open(ctx, "demo", logger)
	if err != nil {
		return err
	}
	defer conn.close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var instances []discovery.Instance
	for _, cfg := range demoEngines {
		in, err := startDemoEngine(ctx, &wg, cfg, conn.etcd, logger)
		if err != nil {
			return err
		}
		instances = append(instances, in)
	}
	if err := waitRegistered(ctx, conn.etcd, len(instances)); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w (is another sidecar running? try --listen 127.0.0.1:0)", err)
	}
	printDemoBanner(e.stdout, ln.Addr().String(), instances, conn)
	return serveSidecar(ctx, sidecar.Config{SidecarID: "demo", Policy: policy, Logger: logger, ShutdownTimeout: 5 * time.Second},
		sidecar.LoadConfig{}, ln, conn, nil, nil)
}

// startDemoEngine serves a simulated engine on a free loopback port and
// registers it through the same code path as `blitzscale register`.
func startDemoEngine(ctx context.Context, wg *sync.WaitGroup, cfg llmsim.Config, reg etcd.Config, logger *slog.Logger) (discovery.Instance, error) {
	sim, err := llmsim.New(cfg)
	if err != nil {
		return discovery.Instance{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return discovery.Instance{}, fmt.Errorf("engine %s: %w", cfg.ID, err)
	}
	in := discovery.Instance{ID: cfg.ID, Address: ln.Addr().String(), Models: cfg.Models,
		Meta: map[string]string{"engine": "llmsim", "zone": "demo"}}
	registrar, err := etcd.NewRegistrar(etcd.RegistrarConfig{Config: reg})
	if err != nil {
		ln.Close()
		return discovery.Instance{}, err
	}
	// The engine outlives its registration: it stops after the drain.
	engineCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { _ = serveUntilDone(engineCtx, ln, sim, time.Second) })
	wg.Go(func() {
		defer stopEngine()
		probe := discovery.ProbeConfig{Interval: time.Second, DrainPeriod: 100 * time.Millisecond, Logger: logger}
		if err := discovery.KeepRegistered(ctx, registrar, in, probe); err != nil {
			logger.Warn("demo engine registration", "instance", in.ID, "err", err)
		}
	})
	return in, nil
}

// waitRegistered returns once the registry lists n instances, so that the
// printed commands work the moment they appear.
func waitRegistered(ctx context.Context, reg etcd.Config, n int) error {
	src, err := etcd.NewSource(reg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for snap := range src.Watch(wctx) {
		if len(snap.Instances) >= n {
			return nil
		}
	}
	if ctx.Err() != nil {
		return nil // interrupted: the sidecar will stop at once
	}
	return errors.New("demo: the simulated engines did not register within 15s")
}

func printDemoBanner(w io.Writer, addr string, instances []discovery.Instance, conn *conn) {
	var b strings.Builder
	fmt.Fprintf(&b, "BlitzScale demo: a sidecar on http://%s routing to %d simulated engines\n\n", addr, len(instances))
	for _, in := range instances {
		fmt.Fprintf(&b, "  %-8s %-21s %s\n", in.ID, in.Address, strings.Join(in.Models, ", "))
	}
	fmt.Fprintf(&b, "\nRegistry: embedded etcd at %s, keys under %s/services/%s/\n", strings.Join(conn.endpoints, ","), conn.etcd.Prefix, conn.etcd.Service)
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
