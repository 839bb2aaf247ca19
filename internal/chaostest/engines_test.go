package chaostest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/sidecar"
)

// workers is the client concurrency of the load tests: enough to keep
// every engine busy, few enough for two cores under -race.
const workers = 6

// setup changes the defaults of threeEngines: the engines' configurations
// and the sidecar's.
type setup struct {
	engines [3]llmsim.Config
	sidecar func(*sidecar.Config)
}

// threeEngines starts three engines behind a sidecar fed by a static file.
func threeEngines(t *testing.T, su setup) (*runningSidecar, []*engine) {
	t.Helper()
	logger := testLogger(t)
	engines := []*engine{
		startEngine(t, "e0", su.engines[0]),
		startEngine(t, "e1", su.engines[1]),
		startEngine(t, "e2", su.engines[2]),
	}
	cfg := chaosConfig(logger)
	if su.sidecar != nil {
		su.sidecar(&cfg)
	}
	rs := startSidecar(t, cfg, staticSource(t, logger, engines...))
	eventually(t, "three instances routable", func() bool { return len(rs.state(t).Instances) == 3 })
	return rs, engines
}

func TestEngineKilledUnderLoad(t *testing.T) {
	noLeaks(t)
	rs, engines := threeEngines(t, setup{})
	victim := engines[1]

	l := startLoad(rs, workers)
	// Every engine is serving before the kill.
	eventually(t, "every engine served 20 requests", func() bool {
		for _, e := range engines {
			if l.count(func(o outcome) bool { return o.ok() && o.instance == e.id }) < 20 {
				return false
			}
		}
		return true
	})
	killedAt := time.Now()
	victim.kill()
	// Keep the load on for a while after the kill: the in-flight requests
	// to the victim fail over, later picks of it fail over until its
	// breaker opens, and the breaker keeps it out afterwards.
	eventually(t, "victim's breaker open", func() bool { return rs.breakerOf(t, victim.id) == "open" })
	afterOpen := l.count(func(o outcome) bool { return true })
	eventually(t, "200 more requests after the breaker opened", func() bool {
		return l.count(func(o outcome) bool { return true }) >= afterOpen+200
	})
	outs := l.stop()

	if bad := failures(outs); len(bad) > 0 {
		t.Errorf("%d of %d client requests failed, first: %v", len(bad), len(outs), bad[0])
	}
	retried, servedAfter := 0, 0
	for _, o := range outs {
		if o.route == "retry" {
			retried++
		}
		if o.instance == victim.id && o.sent().After(killedAt) {
			servedAfter++
		}
	}
	if servedAfter > 0 {
		t.Errorf("the killed engine served %d requests after its death", servedAfter)
	}
	// Its breaker opened on failures, and every failure was retried.
	if trip := int(rs.s.Config().Breaker.ConsecutiveFailures); retried < trip {
		t.Errorf("%d requests retried, want at least the %d failures that opened the breaker", retried, trip)
	}
	t.Logf("%d requests, %d retried on another instance, by instance %v", len(outs), retried, byInstance(outs))
	if rs.metric(t, `blitz_breaker_state{instance="e1"}`) != 2 {
		t.Errorf("blitz_breaker_state of the killed engine is not 2 (open)")
	}
	rs.assertIdle(t)
}

func TestEngineAnswering500(t *testing.T) {
	noLeaks(t)
	const coolDown = 2 * time.Second
	const probeInterval = 100 * time.Millisecond
	rs, engines := threeEngines(t, setup{sidecar: func(cfg *sidecar.Config) {
		cfg.Breaker.CoolDown = coolDown
		cfg.Breaker.ProbeInterval = probeInterval
	}})
	bad := engines[2]
	bad.sim.SetFaults(llmsim.Faults{ErrorRatio: 1})

	l := startLoad(rs, workers)
	eventually(t, "erroring engine's breaker open", func() bool { return rs.breakerOf(t, bad.id) == "open" })
	openedAt := time.Now()
	// Stay within the cool-down: once it passes, a probe of /health (which
	// this engine answers 200) closes the breaker again. See
	// TestErroringEngineFlapBounded for what happens then.
	eventually(t, "load continues while the breaker is open", func() bool {
		return time.Since(openedAt) >= coolDown/2
	})
	var whileOpen []outcome // sent while the breaker was open
	for _, o := range l.snapshot() {
		if o.sent().After(openedAt) {
			whileOpen = append(whileOpen, o)
		}
	}

	// Recovery: the engine answers again; it must take traffic within the
	// rest of the cool-down plus one probe interval.
	recoveredAt := time.Now()
	bad.sim.SetFaults(llmsim.Faults{})
	eventually(t, "recovered engine serves again", func() bool {
		return l.count(func(o outcome) bool { return o.ok() && o.instance == bad.id && o.at.After(recoveredAt) }) > 0
	})
	backAt := time.Now()
	outs := l.stop()

	// The engine's 500s are retried on the healthy engines (within the
	// retry budget) while its breaker trips: the app sees none of them.
	errs := failures(outs)
	limit := 0
	if len(errs) > limit {
		t.Errorf("%d client errors, want none: %v", len(errs), errs)
	}
	toBad := 0
	for _, o := range whileOpen {
		if o.instance == bad.id {
			toBad++
		}
	}
	if len(whileOpen) < 50 || float64(toBad) >= 0.02*float64(len(whileOpen)) {
		t.Errorf("while open, the erroring engine got %d of %d requests, want < 2%% of at least 50", toBad, len(whileOpen))
	}
	back := backAt.Sub(recoveredAt)
	// Polling adds up to a few ms; -race and two cores add more.
	if bound := coolDown + probeInterval + 500*time.Millisecond; back > bound {
		t.Errorf("recovered engine took traffic after %v, want within cool-down + probe interval (bound %v)", back, bound)
	}
	t.Logf("client errors %d (limit %d); while open: %d requests, %d to the bad engine; back %v after recovery, %v after the trip",
		len(errs), limit, len(whileOpen), toBad, back.Round(time.Millisecond), backAt.Sub(openedAt).Round(time.Millisecond))
	rs.assertIdle(t)
}

// An engine whose /health says 200 while every inference fails: after each
// cool-down the probe closes the breaker and real requests trip it again.
// The cost per cool-down must stay bounded by the trip threshold, so that
// the engine still gets almost no traffic.
func TestErroringEngineFlapBounded(t *testing.T) {
	noLeaks(t)
	const coolDown = 500 * time.Millisecond
	rs, engines := threeEngines(t, setup{sidecar: func(cfg *sidecar.Config) { cfg.Breaker.CoolDown = coolDown }})
	bad := engines[0]
	bad.sim.SetFaults(llmsim.Faults{ErrorRatio: 1})
	start := time.Now()
	l := startLoad(rs, workers)
	eventually(t, "three cool-downs elapsed", func() bool { return time.Since(start) >= 3*coolDown+coolDown/2 })
	outs := l.stop()
	elapsed := time.Since(start)

	errs := failures(outs)
	trips := int(elapsed/coolDown) + 1 // the first trip, then at most one per cool-down
	cfg := rs.s.Config()
	limit := trips * (int(cfg.Breaker.ConsecutiveFailures) + workers - 1)
	if len(errs) > limit {
		t.Errorf("%d client errors in %v, want at most %d (%d trips)", len(errs), elapsed, limit, trips)
	}
	t.Logf("%d requests in %v, %d client errors (%.2f%%), by instance %v",
		len(outs), elapsed.Round(time.Millisecond), len(errs), 100*float64(len(errs))/float64(len(outs)), byInstance(outs))
	rs.assertIdle(t)
}

func TestHungEngineFailsOverAfterFirstByteTimeout(t *testing.T) {
	noLeaks(t)
	const firstByte = 300 * time.Millisecond
	rs, engines := threeEngines(t, setup{sidecar: func(cfg *sidecar.Config) { cfg.FirstByteTimeout = firstByte }})
	hung := engines[1]
	hung.sim.SetFaults(llmsim.Faults{Hang: true})

	l := startLoad(rs, workers)
	eventually(t, "hung engine's breaker open", func() bool { return rs.breakerOf(t, hung.id) == "open" })
	n := len(l.snapshot())
	eventually(t, "100 more requests", func() bool { return len(l.snapshot()) >= n+100 })
	outs := l.stop()

	if bad := failures(outs); len(bad) > 0 {
		t.Errorf("%d of %d client requests failed, first: %v", len(bad), len(outs), bad[0])
	}
	var failedOver []time.Duration
	for _, o := range outs {
		if o.instance == hung.id {
			t.Errorf("the hung engine answered: %v", o)
		}
		if o.route == "retry" {
			failedOver = append(failedOver, o.latency)
			if o.latency < firstByte {
				t.Errorf("a retried request took %v, less than the first-byte timeout %v", o.latency, firstByte)
			}
		}
	}
	if len(failedOver) == 0 {
		t.Error("no request failed over from the hung engine")
	}
	t.Logf("%d requests, %d failed over (p50 %v, max %v)", len(outs), len(failedOver),
		percentile(failedOver, 50).Round(time.Millisecond), percentile(failedOver, 100).Round(time.Millisecond))
	if st := hung.sim.Stats(); st.Running != 0 {
		t.Errorf("hung engine still runs %d requests", st.Running)
	}
	rs.assertIdle(t)
}

func TestEveryEngineDown(t *testing.T) {
	noLeaks(t)
	rs, engines := threeEngines(t, setup{})
	// Warm: connections to every engine exist, as in production.
	l := startLoad(rs, 3)
	eventually(t, "30 requests served", func() bool { return l.count(outcome.ok) >= 30 })
	if bad := failures(l.stop()); len(bad) > 0 {
		t.Fatalf("warm-up failures: %v", bad)
	}
	for _, e := range engines {
		e.kill()
	}

	ctx := context.Background()
	cfg := rs.s.Config()
	var before []outcome // until the first 503
	for i := 0; ; i++ {
		o := rs.chat(ctx, i)
		if o.err != nil {
			t.Fatalf("request %d: %v", i, o.err)
		}
		if o.latency >= time.Second {
			t.Errorf("request %d took %v; want well under a second", i, o.latency)
		}
		if o.status == http.StatusServiceUnavailable {
			break
		}
		// Before every breaker is open, a request that found every
		// instance dead after its retries says so.
		if o.status != http.StatusBadGateway || o.code != "upstream_error" {
			t.Errorf("request %d: %v, want 502 upstream_error", i, o)
		}
		before = append(before, o)
		if i > int(cfg.Breaker.ConsecutiveFailures) {
			t.Fatalf("no 503 after %d requests; every breaker should be open after %d", i+1, cfg.Breaker.ConsecutiveFailures)
		}
	}
	var after []time.Duration
	for i := range 50 {
		o := rs.chat(ctx, 1000+i)
		if o.status != http.StatusServiceUnavailable || o.code != "no_healthy_upstream" || o.retryAft == "" {
			t.Fatalf("request %d with every breaker open: %v (Retry-After %q), want 503 no_healthy_upstream with Retry-After", i, o, o.retryAft)
		}
		after = append(after, o.latency)
	}
	if p := percentile(after, 100); p >= time.Second {
		t.Errorf("slowest 503 took %v, want well under a second", p)
	}
	t.Logf("%d requests got 502 before every breaker opened (max %v); then 503 no_healthy_upstream p50 %v, p99 %v, max %v",
		len(before), percentile(latencies(before), 100).Round(time.Microsecond),
		percentile(after, 50).Round(time.Microsecond), percentile(after, 99).Round(time.Microsecond), percentile(after, 100).Round(time.Microsecond))
	for _, id := range []string{"e0", "e1", "e2"} {
		if b := rs.breakerOf(t, id); b != "open" {
			t.Errorf("breaker of %s is %s, want open", id, b)
		}
	}
	rs.assertIdle(t)
}

func TestStreamEngineDiesMidway(t *testing.T) {
	noLeaks(t)
	rs, engines := threeEngines(t, setup{})
	for _, e := range engines {
		e.sim.SetFaults(llmsim.Faults{FailMidStream: 3})
	}
	req, err := http.NewRequest(http.MethodPost, rs.url+"/v1/chat/completions", strings.NewReader(string(chatBody(1, true))))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := rs.client.Do(req)
	if err != nil {
		t.Fatalf("stream request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, content type %q; want a 200 event stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events, err := readSSE(resp.Body)
	if err != nil {
		t.Fatalf("reading the stream: %v (the sidecar must end it cleanly with an error event)", err)
	}
	if len(events) < 2 {
		t.Fatalf("got %d events %q, want some chunks then an error event", len(events), events)
	}
	for _, ev := range events[:len(events)-1] {
		if ev == "[DONE]" || strings.Contains(string(ev), `"error"`) {
			t.Errorf("event %q before the last one", ev)
		}
	}
	var last struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-1]), &last); err != nil || last.Error.Code == "" {
		t.Fatalf("last event %q is not an OpenAI error (%v)", events[len(events)-1], err)
	}
	if last.Error.Code != "upstream_error" {
		t.Errorf("error code %q, want upstream_error", last.Error.Code)
	}
	t.Logf("%d chunks, then %s", len(events)-1, events[len(events)-1])
	rs.assertIdle(t)
}

// Regression: engines send a stream's headers when they admit it, before a
// prefill that may take seconds. An engine that died in that window used to
// cost the client an error event although nothing had reached it; the
// sidecar now holds the headers back until the first event and fails over.
func TestStreamEngineDiesBeforeFirstEvent(t *testing.T) {
	noLeaks(t)
	slow := llmsim.Config{TTFT: time.Minute} // admitted, never reaches its first token
	rs, engines := threeEngines(t, setup{engines: [3]llmsim.Config{{}, slow, {}}})
	victim := engines[1]

	const streams = 9
	type result struct {
		status   int
		instance string
		route    string
		events   []sseEvent
		err      error
	}
	results := make(chan result, streams)
	for i := range streams {
		go func() {
			resp, err := rs.client.Post(rs.url+"/v1/chat/completions", "application/json", strings.NewReader(string(chatBody(i, true))))
			if err != nil {
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			events, err := readSSE(resp.Body)
			results <- result{status: resp.StatusCode, instance: resp.Header.Get("X-Blitz-Instance"), route: resp.Header.Get("X-Blitz-Route"), events: events, err: err}
		}()
	}
	// Some streams are admitted by the victim: their headers are sent.
	eventually(t, "streams admitted by the slow engine", func() bool { return victim.sim.Stats().Running > 0 })
	admitted := victim.sim.Stats().Running
	victim.kill()

	retried := 0
	for range streams {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("stream failed: %v", r.err)
		case r.status != http.StatusOK || len(r.events) == 0 || r.events[len(r.events)-1] != "[DONE]":
			t.Errorf("stream from %q: status %d, events %q; want a complete stream", r.instance, r.status, r.events)
		case r.instance == victim.id:
			t.Errorf("the killed engine served a stream")
		case r.route == "retry":
			retried++
		}
	}
	if retried < int(admitted) {
		t.Errorf("%d streams retried, want at least the %d the killed engine had admitted", retried, admitted)
	}
	t.Logf("%d streams admitted by the killed engine, %d retried, all complete", admitted, retried)
	rs.assertIdle(t)
}

// Regression: a stream admitted by an engine that then produces nothing (a
// stuck prefill: headers sent, no token) waited for the stream idle timeout
// and ended in an error event. It now fails over after the first-byte
// timeout, like a request whose headers never came.
func TestHungStreamFailsOverAfterFirstByteTimeout(t *testing.T) {
	noLeaks(t)
	const firstByte = 300 * time.Millisecond
	stuck := llmsim.Config{TTFT: time.Minute}
	rs, engines := threeEngines(t, setup{
		engines: [3]llmsim.Config{{}, stuck, {}},
		sidecar: func(cfg *sidecar.Config) { cfg.FirstByteTimeout = firstByte },
	})
	victim := engines[1]
	var failedOver []time.Duration
	for i := 0; victim.sim.Stats().Requests < 2; i++ {
		if i > 200 {
			t.Fatal("the stuck engine got no stream in 200")
		}
		start := time.Now()
		resp, err := rs.client.Post(rs.url+"/v1/chat/completions", "application/json", strings.NewReader(string(chatBody(i, true))))
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		events, err := readSSE(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK || len(events) == 0 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("stream %d from %q: status %d, events %q, err %v; want a complete stream", i, resp.Header.Get("X-Blitz-Instance"), resp.StatusCode, events, err)
		}
		if resp.Header.Get("X-Blitz-Route") == "retry" {
			failedOver = append(failedOver, took)
			if took < firstByte || took > firstByte+2*time.Second {
				t.Errorf("stream %d failed over after %v, want just over the first-byte timeout %v", i, took, firstByte)
			}
		}
	}
	if len(failedOver) < 2 {
		t.Errorf("%d streams failed over, want every stream the stuck engine admitted (2)", len(failedOver))
	}
	t.Logf("%d streams failed over from the stuck engine, after %v", len(failedOver), failedOver)
	rs.assertIdle(t)
}
