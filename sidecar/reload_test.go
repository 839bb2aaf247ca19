package sidecar

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/routing"
)

func TestReload(t *testing.T) {
	_, srv := startSim(t, llmsim.Config{ID: "e", Models: []string{"m"}, TTFT: time.Millisecond, ITL: 20 * time.Millisecond})
	sc := newSidecar(t, Config{Policy: "round-robin", SidecarID: "s"}, instance("e", srv, "m"))
	route := func() string {
		resp, body := sc.post(t, "/v1/completions", `{"model":"m","max_tokens":1,"prompt":"x"}`)
		if resp.StatusCode != 200 && resp.StatusCode != 429 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if resp.StatusCode == 429 {
			return "429"
		}
		return resp.Header.Get("X-Blitz-Route")
	}
	if got := route(); got != "round-robin" {
		t.Fatalf("route %q before reload", got)
	}

	// A stream open across a reload that replaces the transport finishes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := sc.openStream(t, ctx, `{"model":"m","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"x"}]}`)
	defer stream.Body.Close()

	next := Config{Policy: "least-load", SidecarID: "s", FirstByteTimeout: time.Minute,
		Admission: routing.AdmissionConfig{Low: routing.RateLimit{Rate: 1, Burst: 1}}}
	if err := sc.s.Reload(next); err != nil {
		t.Fatal(err)
	}
	events, err := newSSEReader(stream.Body).all()
	if err != nil || len(events) == 0 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream across the reload: %v, %d events", err, len(events))
	}
	if got := route(); got != "least-load" {
		t.Errorf("route %q after reload, want least-load", got)
	}
	if got := sc.s.Config().FirstByteTimeout; got != time.Minute {
		t.Errorf("first-byte-timeout %v after reload", got)
	}

	for name, bad := range map[string]Config{
		"policy":           {Policy: "fastest", SidecarID: "s"},
		"sidecar-id":       {Policy: "p2c", SidecarID: "other"},
		"max-header-bytes": {Policy: "p2c", SidecarID: "s", MaxHeaderBytes: 1 << 20},
		"queue-max":        {Policy: "p2c", SidecarID: "s", Routing: routing.Config{QueueMax: -5}},
	} {
		err := sc.s.Reload(bad)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("reload with a bad %s: %v", name, err)
		}
	}
	if got := route(); got != "least-load" {
		t.Errorf("a refused reload changed the policy to %q", got)
	}
}
