package breaker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Run probes open and half-open instances every ProbeInterval until ctx is
// done, and returns once its probes have ended.
//
// Each tick it asks every non-closed breaker for its state, which makes
// gobreaker notice an elapsed cool-down, so the open→half-open transition is
// reported within one ProbeInterval even when no request arrives. An open
// instance is not probed: its result could not be recorded before the
// cool-down has passed, and sparing a dead engine costs nothing. A half-open
// instance is probed with GET http://<address><ProbePath>, and the probe is
// its single trial: a 2xx closes the breaker before any real request is
// risked; anything else reopens it for another cool-down. If a real request
// already holds the trial, the instance is skipped this tick.
func (s *Set) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probeAll(ctx)
		}
	}
}

// probeAll runs one tick: probes run in parallel, so one hung instance does
// not delay the others by ProbeTimeout, and the tick waits for all of them,
// so ticks never overlap and Run leaves no goroutine behind.
func (s *Set) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, e := range *s.entries.Load() {
		if stateOf(e.mark.Load()) == Closed {
			continue
		}
		st := fromGobreaker(e.cb.State())
		e.flush()
		if st != HalfOpen {
			continue
		}
		done, err := e.cb.Allow()
		e.flush()
		if err != nil {
			continue // a real request holds the trial, or it just closed
		}
		wg.Go(func() {
			err := s.probe(ctx, *e.addr.Load())
			switch {
			case err == nil:
				done(nil)
			case ctx.Err() != nil:
				// Shutting down is not the instance's fault.
				done(errIgnored)
			default:
				s.cfg.Logger.Debug("breaker probe failed", "instance", e.id, "err", err)
				done(errFailure)
			}
			e.flush()
		})
	}
	wg.Wait()
}

// probe GETs ProbePath on addr within ProbeTimeout; nil means a 2xx.
func (s *Set) probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
	defer cancel()
	url := "http://" + addr + s.cfg.ProbePath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("breaker: probe %s: %w", url, err)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("breaker: probe: %w", err)
	}
	defer resp.Body.Close()
	// Read a little so a keep-alive client may reuse the connection; a
	// health body is small and its content is not judged.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("breaker: probe %s: status %d", url, resp.StatusCode)
	}
	return nil
}
