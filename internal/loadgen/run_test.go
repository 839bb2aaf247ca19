package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

// fast is an engine that answers at once: no TTFT to speak of, 1 token.
var fast = llmsim.Config{TTFT: time.Nanosecond, ITL: time.Nanosecond}

func TestOpenLoopKeepsItsRate(t *testing.T) {
	_, url, _ := startSim(t, fast)
	res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeOpen, Rate: 200, Duration: time.Second, MaxTokens: 1})
	if res.Sent < 190 || res.Sent > 201 || res.Completed != res.Sent {
		t.Errorf("sent %d, completed %d in 1s at 200/s; want 190..201, all completed", res.Sent, res.Completed)
	}
	if res.Throughput < 180 || res.Throughput > 210 {
		t.Errorf("throughput %.1f/s; want about 200", res.Throughput)
	}
	if res.SendLag == nil || res.Service == nil || res.Latency.Count != res.Completed {
		t.Errorf("open loop result lacks send lag, service time or latencies: %+v", res)
	}
}

// TestOpenLoopIsNotCoordinated is the coordinated-omission check: slow
// answers must neither slow the sender nor vanish from the latencies.
func TestOpenLoopIsNotCoordinated(t *testing.T) {
	_, url, in := startSim(t, llmsim.Config{TTFT: 300 * time.Millisecond, ITL: time.Nanosecond})
	res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeOpen, Rate: 100, Duration: time.Second, MaxTokens: 1})
	if res.Sent < 95 || res.Completed != res.Sent {
		t.Errorf("sent %d, completed %d; want about 100 sent on schedule, all completed", res.Sent, res.Completed)
	}
	if peak := in.peak.Load(); peak < 25 {
		t.Errorf("peak in flight %d; want about rate × latency = 30", peak)
	}
	if !within(res.Latency.P50, 300*time.Millisecond, 600*time.Millisecond) {
		t.Errorf("latency p50 %.0fµs; want the engine's 300ms", res.Latency.P50)
	}
}

func TestClosedLoopHoldsConcurrency(t *testing.T) {
	_, url, in := startSim(t, llmsim.Config{TTFT: 50 * time.Millisecond, ITL: time.Nanosecond})
	res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeClosed, Concurrency: 8, Duration: time.Second, MaxTokens: 1})
	if peak := in.peak.Load(); peak != 8 {
		t.Errorf("peak in flight %d; want exactly 8", peak)
	}
	// 8 workers × 1s / 50ms = 160 requests, fewer on a slow machine.
	if res.Completed < 100 || res.Completed > 170 || res.Failed != 0 {
		t.Errorf("completed %d, failed %d; want about 160, none failed", res.Completed, res.Failed)
	}
	if res.SendLag != nil || res.Service != nil {
		t.Error("closed loop reported a send lag or service time")
	}
}

func TestStreamTimings(t *testing.T) {
	for _, endpoint := range []string{EndpointChat, EndpointCompletions} {
		t.Run(endpoint, func(t *testing.T) {
			_, url, _ := startSim(t, llmsim.Config{TTFT: 40 * time.Millisecond, ITL: 15 * time.Millisecond})
			res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeClosed, Concurrency: 4,
				Duration: time.Second, Stream: true, MaxTokens: 5, Endpoint: endpoint})
			if res.Completed < 8 || res.Failed != 0 {
				t.Fatalf("completed %d, failed %d (%v); want some, none failed", res.Completed, res.Failed, res.Errors)
			}
			if res.Tokens != 5*res.Completed {
				t.Errorf("tokens %d for %d streams of 5; the role and usage chunks must not count", res.Tokens, res.Completed)
			}
			// Loose bounds: timers and a busy machine only ever add time.
			if !within(res.TTFT.P50, 40*time.Millisecond, 80*time.Millisecond) {
				t.Errorf("TTFT p50 %.0fµs; want about the engine's 40ms", res.TTFT.P50)
			}
			if !within(res.ITL.P50, 10*time.Millisecond, 30*time.Millisecond) || res.ITL.Count != 4*res.Completed {
				t.Errorf("ITL p50 %.0fµs over %d gaps; want about 15ms over 4 per stream", res.ITL.P50, res.ITL.Count)
			}
			if !within(res.Latency.P50, 100*time.Millisecond, 160*time.Millisecond) {
				t.Errorf("latency p50 %.0fµs; want about 40ms + 4 × 15ms", res.Latency.P50)
			}
		})
	}
}

func TestRoundRobinOverURLs(t *testing.T) {
	_, a, inA := startSim(t, fast)
	_, b, inB := startSim(t, fast)
	res := run(t, Config{URLs: []string{a, b}, Model: "m", Mode: ModeClosed, Concurrency: 2, Duration: 300 * time.Millisecond, MaxTokens: 1})
	if res.Failed != 0 || inA.peak.Load() == 0 || inB.peak.Load() == 0 {
		t.Errorf("failed %d, peaks %d and %d; want both URLs used", res.Failed, inA.peak.Load(), inB.peak.Load())
	}
}

func TestErrorsByKind(t *testing.T) {
	refused := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return "http://" + addr + "/v1"
	}
	errorEvent := func(t *testing.T) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"+
				"data: {\"error\":{\"message\":\"upstream broke\",\"type\":\"upstream_error\"}}\n\n")
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/v1"
	}
	simWith := func(f llmsim.Faults) func(*testing.T) string {
		return func(t *testing.T) string {
			sim, url, _ := startSim(t, fast)
			sim.SetFaults(f)
			return url
		}
	}
	tests := []struct {
		name   string
		target func(*testing.T) string
		model  string
		stream bool
		kind   string
	}{
		{"engine 500", simWith(llmsim.Faults{ErrorRatio: 1}), "m", false, "status_500"},
		{"unknown model", simWith(llmsim.Faults{}), "nope", false, "status_404"},
		{"connection refused", refused, "m", false, "connect"},
		{"stream cut", simWith(llmsim.Faults{FailMidStream: 2}), "m", true, "read"},
		{"error event", errorEvent, "m", true, "stream_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := run(t, Config{URLs: []string{tt.target(t)}, Model: tt.model, Mode: ModeOpen, Rate: 50,
				Duration: 200 * time.Millisecond, Stream: tt.stream, MaxTokens: 4})
			if res.Sent == 0 || res.Completed != 0 || res.Errors[tt.kind] != res.Sent {
				t.Errorf("sent %d, completed %d, errors %v; want every request failed as %s", res.Sent, res.Completed, res.Errors, tt.kind)
			}
			if res.Latency.Count != 0 {
				t.Errorf("failed requests entered the latency histogram (%d)", res.Latency.Count)
			}
		})
	}
}

func TestDrainCutsLongStreams(t *testing.T) {
	_, url, in := startSim(t, llmsim.Config{TTFT: time.Millisecond, ITL: time.Second})
	start := time.Now()
	res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeClosed, Concurrency: 3,
		Duration: 300 * time.Millisecond, Stream: true, MaxTokens: 100, Drain: -1})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %v; streams should be cut at the end", took)
	}
	if res.Sent != 3 || res.Incomplete != 3 || res.Failed != 0 {
		t.Errorf("sent %d, incomplete %d, failed %d; want 3 cut streams and no errors", res.Sent, res.Incomplete, res.Failed)
	}
	deadline := time.Now().Add(5 * time.Second)
	for in.now.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := in.now.Load(); n != 0 {
		t.Errorf("%d requests still open at the engine after the run", n)
	}
}

func TestWarmupIsNotMeasured(t *testing.T) {
	_, url, _ := startSim(t, fast)
	res := run(t, Config{URLs: []string{url}, Model: "m", Mode: ModeOpen, Rate: 100,
		Warmup: 500 * time.Millisecond, Duration: 500 * time.Millisecond, MaxTokens: 1})
	if res.Sent < 45 || res.Sent > 51 {
		t.Errorf("sent %d; want the 50 of the measured half only", res.Sent)
	}
}

func TestCancelStopsAtOnce(t *testing.T) {
	_, url, _ := startSim(t, llmsim.Config{TTFT: time.Millisecond, ITL: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{URLs: []string{url}, Model: "m", Mode: ModeClosed, Concurrency: 4,
		Duration: time.Minute, Stream: true, MaxTokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Run took %v after its context ended", took)
	}
	if res.Incomplete != 4 || res.Failed != 0 {
		t.Errorf("incomplete %d, failed %d; want the 4 open streams cut, no errors", res.Incomplete, res.Failed)
	}
}

func TestValidate(t *testing.T) {
	ok := Config{URLs: []string{"http://127.0.0.1:1/v1"}, Model: "m", Mode: ModeClosed, Duration: time.Second}
	tests := []struct {
		flag string
		mod  func(*Config)
	}{
		{"url", func(c *Config) { c.URLs = nil }},
		{"url", func(c *Config) { c.URLs = []string{"127.0.0.1:8089"} }},
		{"model", func(c *Config) { c.Model = " " }},
		{"mode", func(c *Config) { c.Mode = "burst" }},
		{"rate", func(c *Config) { c.Mode = ModeOpen }},
		{"concurrency", func(c *Config) { c.Concurrency = -1 }},
		{"duration", func(c *Config) { c.Duration = 0 }},
		{"warmup", func(c *Config) { c.Warmup = -1 }},
		{"max-tokens", func(c *Config) { c.MaxTokens = -1 }},
		{"endpoint", func(c *Config) { c.Endpoint = "embeddings" }},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			_, err := Run(context.Background(), c)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), ": "+tt.flag+": ") {
				t.Errorf("Run = %v; want ErrInvalidConfig naming %s", err, tt.flag)
			}
		})
	}
}
