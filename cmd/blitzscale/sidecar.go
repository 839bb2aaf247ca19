package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/routing"
	"github.com/blitzscale/router/sidecar"
)

// reloadOnSignal applies a fresh configuration on every signal until ctx
// ends; an invalid one is logged and the running one stays.
func reloadOnSignal(ctx context.Context, s *sidecar.Server, hup <-chan struct{}, reload func() (sidecar.Config, error), log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := reload()
		if err == nil {
			err = s.Reload(cfg)
		}
		if err != nil {
			log.Error("reload refused; the running configuration stays", "err", err)
			continue
		}
		log.Info("configuration reloaded", "policy", cfg.Policy)
	}
}

// sidecarFlags are the flags of `blitzscale sidecar`.
type sidecarFlags struct {
	checkConfig                    bool
	debugAddr                      string
	reg                            registryFlags
	config, listen                 string
	logLevel, logFormat            string
	authTokenFile, upstreamKeyFile string
	modelFirstByteTimeout          stringList // MODEL=DURATION
	cfg                            sidecar.Config
	load                           sidecar.LoadConfig
}

func (f *sidecarFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&f.config, "config", "", "YAML file whose keys are these flag names")
	fs.StringVar(&f.listen, "listen", sidecar.DefaultListen, "address to serve the OpenAI API on (non-loopback needs --auth-token-file)")
	f.reg.register(fs, getenv, "embedded", "embedded", "etcd", "consul", "static")
	fs.DurationVar(&f.load.Period, "load-period", 2*time.Second, "nominal period of this sidecar's load record (stretched to respect --fleet-write-budget)")
	fs.Float64Var(&f.load.FleetWriteBudget, "fleet-write-budget", 100, "registry writes per second the whole fleet's load records may cost")
	fs.StringVar(&f.cfg.SidecarID, "sidecar-id", "", "this sidecar's id in the registry (default: host name)")
	fs.StringVar(&f.cfg.Policy, "policy", sidecar.DefaultPolicy, "routing policy: "+strings.Join(routing.Policies, ", "))
	fs.Int64Var(&f.cfg.MaxBodyBytes, "max-body-bytes", sidecar.DefaultMaxBodyBytes, "largest request body accepted (413 above)")
	fs.DurationVar(&f.cfg.ConnectTimeout, "connect-timeout", sidecar.DefaultConnectTimeout, "timeout to connect to an instance")
	fs.DurationVar(&f.cfg.FirstByteTimeout, "first-byte-timeout", sidecar.DefaultFirstByteTimeout, "timeout for an instance's response headers (prefill can be slow)")
	fs.Var(&f.modelFirstByteTimeout, "model-first-byte-timeout", "MODEL=DURATION: --first-byte-timeout for one model (repeatable)")
	fs.DurationVar(&f.cfg.ShutdownTimeout, "shutdown-timeout", sidecar.DefaultShutdownTimeout, "how long open streams may finish after SIGTERM")
	fs.DurationVar(&f.cfg.ReadHeaderTimeout, "read-header-timeout", sidecar.DefaultReadHeaderTimeout, "how long a client may take to send its headers")
	fs.IntVar(&f.cfg.MaxHeaderCount, "max-header-count", 100, "most request header fields accepted (431 above)")
	fs.DurationVar(&f.cfg.BodyReadTimeout, "body-read-timeout", 30*time.Second, "how long a client may take to send its body (408 after)")
	fs.IntVar(&f.cfg.MaxRetries, "max-retries", sidecar.DefaultMaxRetries, "other instances to try after a failure before the first byte (-1: none)")
	for _, p := range []struct {
		name string
		l    *routing.RateLimit
	}{{"high", &f.cfg.Admission.High}, {"normal", &f.cfg.Admission.Normal}, {"low", &f.cfg.Admission.Low}} {
		fs.Float64Var(&p.l.Rate, "rate-"+p.name, 0, "admitted "+p.name+"-priority requests per second (0: unlimited)")
		fs.IntVar(&p.l.Burst, "burst-"+p.name, 0, "burst of the "+p.name+"-priority token bucket (0: max(1, rate))")
	}
	fs.DurationVar(&f.cfg.StreamIdleTimeout, "stream-idle-timeout", sidecar.DefaultStreamIdleTimeout, "end a response whose instance sends nothing for this long")
	fs.IntVar(&f.cfg.AffinityPrefixBytes, "affinity-prefix-bytes", 256, "leading prompt bytes that key prefix affinity when a request names no session")
	fs.Float64Var(&f.cfg.RetryBudget.Ratio, "retry-budget-ratio", 0.2, "retries allowed per request, on average")
	fs.Float64Var(&f.cfg.RetryBudget.MinPerSecond, "retry-budget-min", 10, "retries per second allowed whatever the ratio")
	r := &f.cfg.Routing
	fs.IntVar(&r.MaxInflightPerInstance, "max-inflight-per-instance", routing.DefaultMaxInflightPerInstance, "fleet-wide concurrency cap per instance (meta max_concurrency overrides; -1: none)")
	fs.IntVar(&r.QueueMax, "queue-max", routing.DefaultQueueMax, "requests that may wait per model when every instance is at its cap")
	fs.DurationVar(&r.QueueWaitHigh, "queue-wait-high", routing.DefaultQueueWaitHigh, "longest wait in the queue for high priority")
	fs.DurationVar(&r.QueueWaitNormal, "queue-wait-normal", routing.DefaultQueueWaitNormal, "longest wait in the queue for normal priority")
	fs.DurationVar(&r.QueueWaitLow, "queue-wait-low", routing.DefaultQueueWaitLow, "longest wait in the queue for low priority")
	fs.Float64Var(&r.AffinityLoadFactor, "affinity-load-factor", routing.DefaultAffinityLoadFactor, "bounded-load factor c: an instance takes affinity traffic up to c × the mean load")
	fs.DurationVar(&r.EngineStaleAfter, "engine-stale-after", routing.DefaultEngineStaleAfter, "ignore an engine's scraped queue older than this")
	fs.DurationVar(&f.cfg.Scrape.Interval, "engine-scrape-interval", time.Second, "how often engines' /metrics are read (negative: never)")
	b := &f.cfg.Breaker
	fs.Func("breaker-failures", "consecutive failures that open an instance's breaker (default 5)", uintFlag(&b.ConsecutiveFailures))
	fs.Float64Var(&b.FailureRatio, "breaker-failure-ratio", breaker.DefaultFailureRatio, "failure ratio that opens a breaker ...")
	fs.Func("breaker-min-requests", "... over at least this many requests in the window (default 20)", uintFlag(&b.MinRequests))
	fs.DurationVar(&b.Window, "breaker-window", breaker.DefaultWindow, "rolling window of the failure ratio")
	fs.DurationVar(&b.CoolDown, "breaker-cooldown", breaker.DefaultCoolDown, "how long a breaker stays open before a probe may close it")
	fs.StringVar(&b.ProbePath, "breaker-probe-path", breaker.DefaultProbePath, "engine path probed to close a breaker")
	fs.StringVar(&f.authTokenFile, "auth-token-file", "", "file holding the bearer token clients must send (required off loopback)")
	fs.StringVar(&f.upstreamKeyFile, "upstream-api-key-file", "", "file holding the API key sent to instances instead of the client's Authorization")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "loopback host:port serving Go's profiles at /debug/pprof/ (off by default)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
}

// validate checks what the sidecar package cannot: addresses, files, the
// registry choice. Errors name the flag.
func (f *sidecarFlags) validate() error {
	host, _, err := net.SplitHostPort(f.listen)
	if err != nil {
		return usageErr("listen: %q: %v", f.listen, err)
	}
	if !isLoopback(host) && f.authTokenFile == "" {
		return usageErr("listen: %q is not a loopback address; serving off the host requires --auth-token-file", f.listen)
	}
	if err := f.reg.validate(); err != nil {
		return err
	}
	if f.debugAddr != "" {
		if host, _, err := net.SplitHostPort(f.debugAddr); err != nil || !isLoopback(host) {
			return usageErr("debug-addr: %q: must be a loopback host:port (profiles expose internals)", f.debugAddr)
		}
	}
	if _, err := parseLevel(f.logLevel); err != nil {
		return usageErr("log-level: %v", err)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return usageErr("log-format: %q: want text or json", f.logFormat)
	}
	if err := f.parseModelTimeouts(); err != nil {
		return err
	}
	if err := f.cfg.Validate(); err != nil {
		return usageErr("%v", err)
	}
	if err := f.load.Validate(); err != nil {
		return usageErr("%v", err)
	}
	return nil
}

// parseModelTimeouts turns --model-first-byte-timeout's MODEL=DURATION
// entries into the config's map.
func (f *sidecarFlags) parseModelTimeouts() error {
	f.cfg.ModelFirstByteTimeout = nil
	for _, e := range f.modelFirstByteTimeout {
		model, v, ok := strings.Cut(e, "=")
		d, err := time.ParseDuration(v)
		if !ok || model == "" || err != nil || d <= 0 {
			return usageErr("model-first-byte-timeout: %q: want MODEL=DURATION with a duration > 0, e.g. llama-3.1-70b=300s", e)
		}
		if f.cfg.ModelFirstByteTimeout == nil {
			f.cfg.ModelFirstByteTimeout = map[string]time.Duration{}
		}
		f.cfg.ModelFirstByteTimeout[model] = d
	}
	return nil
}

// uintFlag parses a non-negative integer into a uint32 field.
func uintFlag(dst *uint32) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return err
		}
		*dst = uint32(n)
		return nil
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func newLogger(e env, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

func readSecret(flagName, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usageErr("%s: %v", flagName, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", usageErr("%s: %s is empty", flagName, path)
	}
	return s, nil
}

// loadSidecarFlags parses and validates the sidecar's flags, env and
// config file, and reads its secrets: everything a start or a reload needs.
func loadSidecarFlags(args []string, e env) (*sidecarFlags, error) {
	f := &sidecarFlags{}
	fs := newFlagSet("sidecar", e)
	f.register(fs, e.getenv)
	fs.BoolVar(&f.checkConfig, "check-config", false, "validate the configuration (flags, env, file, secrets) and exit: 0 when valid, 2 otherwise")
	if err := parse(fs, args, e); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	var err error
	if f.cfg.AuthToken, err = readSecret("auth-token-file", f.authTokenFile); err != nil {
		return nil, err
	}
	if f.cfg.UpstreamAPIKey, err = readSecret("upstream-api-key-file", f.upstreamKeyFile); err != nil {
		return nil, err
	}
	f.cfg.Logger = newLogger(e, f.logLevel, f.logFormat)
	if f.cfg.SidecarID == "" {
		f.cfg.SidecarID = hostname()
	}
	return f, nil
}

func runSidecar(ctx context.Context, args []string, e env) error {
	f, err := loadSidecarFlags(args, e)
	if err != nil {
		return err
	}
	if f.checkConfig {
		fmt.Fprintln(e.stdout, "configuration OK")
		return nil
	}
	if f.debugAddr != "" {
		stop, err := serveDebug(ctx, f.debugAddr)
		if err != nil {
			return fmt.Errorf("debug-addr: %w", err)
		}
		defer stop()
	}
	reg, err := f.reg.open(ctx, f.cfg.SidecarID, f.cfg.Logger)
	if err != nil {
		return err
	}
	defer reg.close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// SIGHUP re-reads the same flags, env and file: flags still win.
	reload := func() (sidecar.Config, error) {
		next, err := loadSidecarFlags(args, e)
		if err != nil {
			return sidecar.Config{}, err
		}
		next.cfg.Logger = f.cfg.Logger
		return next.cfg, nil
	}
	return serveSidecar(ctx, f.cfg, f.load, ln, reg, e.reload, reload)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "sidecar"
	}
	return h
}

// serveSidecar runs the sidecar on ln with reg until ctx is done. Load
// publishing outlives the HTTP drain so that peers see this sidecar's
// streams until they end; then the record is removed.
func serveSidecar(ctx context.Context, cfg sidecar.Config, load sidecar.LoadConfig, ln net.Listener, reg *conn,
	hup <-chan struct{}, reload func() (sidecar.Config, error)) error {
	s, err := sidecar.New(cfg)
	if err != nil {
		ln.Close()
		return usageErr("%v", err)
	}
	var wg sync.WaitGroup
	if hup != nil && reload != nil {
		wg.Go(func() { reloadOnSignal(ctx, s, hup, reload, cfg.Logger) })
	}
	peersCtx, stopPeers := context.WithCancel(ctx)
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	if reg.peers != nil {
		wg.Go(func() { s.FollowPeers(peersCtx, reg.peers) })
	}
	if reg.publisher != nil {
		wg.Go(func() {
			if err := s.PublishLoad(pubCtx, reg.publisher, load); err != nil {
				cfg.Logger.Warn("removing the load record failed", "err", err)
			}
		})
	}
	start := time.Now()
	err = s.Run(ctx, ln, reg.source)
	stopPub()
	stopPeers()
	wg.Wait()
	cfg.Logger.Info("sidecar stopped", "uptime", time.Since(start).Round(time.Second))
	return err
}
