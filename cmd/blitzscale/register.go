package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/discovery/consul"
	"github.com/blitzscale/router/discovery/etcd"
)

// runRegister registers one inference instance, keeps it registered while
// its engine answers probes, and on SIGTERM/SIGINT marks it draining, waits
// the drain period (a second signal cuts it short) and removes it.
func runRegister(ctx context.Context, args []string, e env) error {
	fs := newFlagSet("register", e)
	var (
		reg                 registryFlags
		config, logLevel    string
		in                  discovery.Instance
		models, meta        stringList
		ttl, drain, every   time.Duration
		healthPath, baseURL string
	)
	fs.StringVar(&config, "config", "", "YAML file whose keys are these flag names")
	reg.register(fs, e.getenv, "etcd", "etcd", "consul")
	fs.Lookup("registry").Usage = "where to register the instance: etcd or consul"
	fs.StringVar(&in.ID, "id", "", "instance id, unique within the service (required)")
	fs.StringVar(&in.Address, "address", "", "host:port of the engine's OpenAI-compatible server (required)")
	fs.Var(&models, "model", "model or adapter id served (repeatable; required)")
	fs.Var(&meta, "meta", "attribute key=value, e.g. engine=vllm (repeatable)")
	fs.IntVar(&in.Weight, "weight", 1, "share of load relative to other instances")
	fs.StringVar(&healthPath, "health-path", discovery.DefaultHealthPath, "engine path probed for health (404 falls back to /v1/models)")
	fs.StringVar(&baseURL, "probe-url", "", "engine root URL for probes (default http://<address>)")
	fs.DurationVar(&every, "probe-interval", discovery.DefaultProbeInterval, "time between health probes")
	fs.DurationVar(&ttl, "ttl", etcd.DefaultLeaseTTL, "etcd lease TTL or Consul TTL check: a registrant that dies is out of routing this long after (>= 10s)")
	fs.DurationVar(&drain, "drain-period", discovery.DefaultDrainPeriod, "how long the instance stays registered as draining on shutdown")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, e); err != nil {
		return err
	}
	in.Models = models
	in.Meta = map[string]string{}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErr("meta: %q: want key=value", kv)
		}
		in.Meta[k] = v
	}
	if err := in.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if reg.registry == "consul" {
		if err := consul.ValidateInstance(in); err != nil {
			return usageErr("%v", err)
		}
	}
	if err := reg.validate(); err != nil {
		return err
	}
	if ttl < etcd.MinRegistrarLeaseTTL {
		return usageErr("ttl: %v: must be at least %v", ttl, etcd.MinRegistrarLeaseTTL)
	}
	if drain < 0 || every <= 0 {
		return usageErr("drain-period, probe-interval: must be positive")
	}
	lvl, err := parseLevel(logLevel)
	if err != nil {
		return usageErr("log-level: %v", err)
	}
	logger := newLogger(e, lvl.String(), "text")

	c, err := reg.open(ctx, "", logger)
	if err != nil {
		return err
	}
	defer c.close()
	registrar, err := c.registrar(reg.registry, ttl)
	if err != nil {
		return usageErr("%v", err)
	}
	abort, stopWatching := secondSignal(ctx)
	defer stopWatching()
	probe := discovery.ProbeConfig{BaseURL: baseURL, HealthPath: healthPath, Interval: every, DrainPeriod: drain,
		DrainAbort: abort, Logger: logger}
	if err := probe.Validate(); err != nil {
		return usageErr("%v", err)
	}
	fmt.Fprintf(e.stderr, "registering %s (%s) in %s as service %q\n", in.ID, in.Address, reg.registry, reg.service)
	if err := discovery.KeepRegistered(ctx, registrar, in, probe); err != nil {
		if errors.Is(err, discovery.ErrInvalidInstance) || errors.Is(err, discovery.ErrInvalidProbeConfig) {
			return usageErr("%v", err)
		}
		return err
	}
	return nil
}

// secondSignal returns a channel closed when SIGINT or SIGTERM arrives after
// ctx ended (the first signal ends ctx): an operator's way to skip the drain.
// stop ends the watch.
func secondSignal(ctx context.Context) (abort <-chan struct{}, stop func()) {
	ch := make(chan struct{})
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sig)
		select {
		case <-sig:
			close(ch)
		case <-done:
		}
	}()
	return ch, func() { close(done); <-exited }
}
