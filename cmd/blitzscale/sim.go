package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

type simFlags struct {
	config, listen string
	models         stringList
	cfg            llmsim.Config
	faults         llmsim.Faults
}

func (f *simFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "YAML file whose keys are these flag names")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8000", "address to serve the simulated engine on")
	fs.StringVar(&f.cfg.ID, "id", llmsim.DefaultID, "instance id echoed in the X-Sim-Id header")
	fs.Var(&f.models, "model", "model id to serve (repeatable; required)")
	fs.DurationVar(&f.cfg.TTFT, "ttft", llmsim.DefaultTTFT, "time to first token of an uncached prompt")
	fs.DurationVar(&f.cfg.ITL, "itl", llmsim.DefaultITL, "inter-token latency")
	fs.IntVar(&f.cfg.MaxConcurrency, "max-concurrency", llmsim.DefaultMaxConcurrency, "running slots (like vLLM --max-num-seqs); more requests wait")
	fs.IntVar(&f.cfg.MaxQueue, "max-queue", 0, "waiting requests beyond which the engine answers 503 (0: unbounded)")
	fs.IntVar(&f.cfg.PrefixCacheBlocks, "prefix-cache-blocks", llmsim.DefaultPrefixCacheBlocks, "prefix cache capacity in prompt blocks")
	fs.BoolVar(&f.cfg.DisablePrefixCache, "no-prefix-cache", false, "turn the prefix cache off")
	fs.IntVar(&f.cfg.BlockSize, "block-size", llmsim.DefaultBlockSize, "prompt bytes per prefix-cache block")
	fs.IntVar(&f.cfg.DefaultMaxTokens, "max-tokens", llmsim.DefaultMaxTokens, "output tokens when a request sets no max_tokens")
	fs.Int64Var(&f.cfg.Seed, "seed", 0, "seed of the random source (errors, output words)")
	fs.Float64Var(&f.faults.ErrorRatio, "error-ratio", 0, "fault: fraction of inference requests answered with 500")
	fs.Float64Var(&f.faults.SlowFactor, "slow-factor", 0, "fault: multiply TTFT and ITL (0 or 1: normal)")
}

func runSim(ctx context.Context, args []string, e env) error {
	var f simFlags
	fs := newFlagSet("sim", e)
	f.register(fs)
	if err := parse(fs, args, e); err != nil {
		return err
	}
	f.cfg.Models = f.models
	if len(f.models) == 0 {
		return usageErr("model: at least one --model is required")
	}
	sim, err := llmsim.New(f.cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	if err := f.faults.Validate(); err != nil {
		return usageErr("%v", err)
	}
	sim.SetFaults(f.faults)
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Fprintf(e.stderr, "blitzscale sim %q serving %v on http://%s\n", f.cfg.ID, []string(f.models), ln.Addr())
	return serveUntilDone(ctx, ln, sim, 5*time.Second)
}

// serveUntilDone serves h on ln until ctx is done, then shuts down
// gracefully within grace.
func serveUntilDone(ctx context.Context, ln net.Listener, h http.Handler, grace time.Duration) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
