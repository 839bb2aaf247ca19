package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
	"github.com/blitzscale/router/routing"
)

// gate is a channel the test closes once, from the test or its cleanup.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// heldStream is a backend that writes first, flushes, then blocks until the
// gate opens (or its client leaves) before writing rest.
func heldStream(contentType, first, rest string, g *gate) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(w, first)
		_ = http.NewResponseController(w).Flush()
		select {
		case <-g.ch:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, rest)
	}
}

// TestStreamNotBuffered proves that the first event reaches the client
// while the engine is still generating: the engine does not finish until the
// test has read that event through the sidecar. A buffering sidecar makes
// the read block until the deadline and the test fail.
func TestStreamNotBuffered(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		first, rest string
		readFirst   func(br *bufio.Reader) (string, error)
	}{
		{
			name: "SSE", contentType: "text/event-stream; charset=utf-8",
			first: "data: {\"n\":1}\n\n", rest: "data: {\"n\":2}\n\ndata: [DONE]\n\n",
			readFirst: func(br *bufio.Reader) (string, error) { return (&sseReader{br: br}).next() },
		},
		{
			// A body of unknown length (here NDJSON) is flushed per read.
			name: "unknown length", contentType: "application/x-ndjson",
			first: "{\"n\":1}\n", rest: "{\"n\":2}\n",
			readFirst: func(br *bufio.Reader) (string, error) {
				s, err := br.ReadString('\n')
				return strings.TrimSuffix(s, "\n"), err
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			srv := startBackend(t, heldStream(tt.contentType, tt.first, tt.rest, g))
			sc := newSidecar(t, Config{}, instance("held", srv, "m1"))

			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			resp := sc.openStream(t, ctx, `{"model":"m1","stream":true}`)
			br := bufio.NewReader(resp.Body)
			got, err := tt.readFirst(br)
			if err != nil {
				t.Fatalf("the first event did not arrive while the engine held the stream open (the sidecar buffers): %v", err)
			}
			if got != `{"n":1}` {
				t.Fatalf("first event = %q, want {\"n\":1}", got)
			}
			g.open()
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("read the rest: %v", err)
			}
			if string(rest) != tt.rest {
				t.Errorf("rest of the stream = %q, want %q", rest, tt.rest)
			}
		})
	}
}

// flushRecorder is a ResponseWriter that records what was written between
// flushes: one entry per flush.
type flushRecorder struct {
	header  http.Header
	status  int
	pending bytes.Buffer
	flushed []string
}

func (f *flushRecorder) Header() http.Header         { return f.header }
func (f *flushRecorder) WriteHeader(status int)      { f.status = status }
func (f *flushRecorder) Write(p []byte) (int, error) { return f.pending.Write(p) }
func (f *flushRecorder) Flush() {
	f.flushed = append(f.flushed, f.pending.String())
	f.pending.Reset()
}

// TestRelayForwardsWholeEvents feeds relay an SSE body whose reads are
// scripted exactly (an io.Pipe hands each write to one read) and checks
// what the client receives between flushes: a partial event is held until
// its end arrives, then forwarded whole.
func TestRelayForwardsWholeEvents(t *testing.T) {
	s := newServer(t, Config{})
	apply(t, s, discovery.Instance{ID: "a", Address: "127.0.0.1:1", Models: []string{"m1"}})
	ep := s.Router().Table().Endpoints()[0]

	tests := []struct {
		name    string
		reads   []string
		fail    error // the body's error after the reads; nil means EOF
		want    []string
		status  int
		errorEv bool // the last flush is the sidecar's error event
	}{
		{name: "event split over two reads", reads: []string{`data: {"a":`, "1}\n\n"}, want: []string{"data: {\"a\":1}\n\n"}, status: 200},
		{name: "event and a half, then the rest", reads: []string{"data: 1\n\ndata: 2", "2\n\n"}, want: []string{"data: 1\n\n", "data: 22\n\n"}, status: 200},
		{name: "two events in one read", reads: []string{"data: 1\n\ndata: 2\n\n"}, want: []string{"data: 1\n\ndata: 2\n\n"}, status: 200},
		{name: "CRLF events", reads: []string{"data: 1\r\n\r", "\n", "data: 2\r\n\r\n"}, want: []string{"data: 1\r\n\r\n", "data: 2\r\n\r\n"}, status: 200},
		{name: "event split in three", reads: []string{"da", "ta: x\n", "\n"}, want: []string{"data: x\n\n"}, status: 200},
		{name: "unterminated tail at EOF is forwarded", reads: []string{"data: 1\n\ndata: 2"}, want: []string{"data: 1\n\n", "data: 2"}, status: 200},
		{
			name: "break mid-event drops the partial event", reads: []string{"data: 1\n\ndata: {\"trunc"},
			fail: errors.New("connection reset by peer"), want: []string{"data: 1\n\n"}, status: 502, errorEv: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				for _, r := range tt.reads {
					if _, err := io.WriteString(pw, r); err != nil {
						return
					}
				}
				pw.CloseWithError(tt.fail) // nil: EOF
			}()
			defer pr.Close()
			resp := &http.Response{
				StatusCode:    200,
				Header:        http.Header{"Content-Type": {"text/event-stream"}},
				Body:          pr,
				ContentLength: -1,
				Request:       httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil),
			}
			ex := s.exchanges.Get().(*exchange)
			ex.acquire()
			defer ex.release()
			w := &flushRecorder{header: http.Header{}}
			if got, _ := s.relay(w, resp, ex, ep, routing.RouteP2C, time.Now()); got != tt.status {
				t.Errorf("relay returned %d, want %d", got, tt.status)
			}
			if w.pending.Len() != 0 {
				t.Errorf("%q was written but never flushed", w.pending.String())
			}
			got := w.flushed
			if tt.errorEv {
				if len(got) == 0 {
					t.Fatal("no error event")
				}
				checkErrorEvent(t, strings.TrimSuffix(strings.TrimPrefix(got[len(got)-1], "data: "), "\n\n"))
				got = got[:len(got)-1]
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("flushed %q, want %q", got, tt.want)
			}
			if w.header.Get("X-Blitz-Instance") != "a" || w.header.Get("X-Blitz-Route") != "p2c" {
				t.Errorf("headers %v: want X-Blitz-Instance a and X-Blitz-Route p2c", w.header)
			}
		})
	}
}

// checkErrorEvent asserts that data is the sidecar's OpenAI-shaped error
// for a broken stream.
func checkErrorEvent(t *testing.T, data string) {
	t.Helper()
	var e struct{ Error wireError }
	if err := json.Unmarshal([]byte(data), &e); err != nil {
		t.Fatalf("final event %q is not JSON: %v", data, err)
	}
	if e.Error.Code == nil || *e.Error.Code != "upstream_error" || e.Error.Message == nil || e.Error.Type == nil {
		t.Errorf("final event %q: want an error with code upstream_error, a message and a type", data)
	}
}

func TestStreamBreakEndsWithErrorEvent(t *testing.T) {
	tests := []struct {
		name  string
		start func(t *testing.T) *httptest.Server
		body  string
		want  int // intact data events before the error event
	}{
		{
			// The simulator aborts the connection after two data events
			// (the role chunk and the first token).
			name: "simulator fails mid-stream",
			start: func(t *testing.T) *httptest.Server {
				sim, srv := startSim(t, simConfig("a", "m1"))
				sim.SetFaults(llmsim.Faults{FailMidStream: 2})
				return srv
			},
			body: `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}`,
			want: 2,
		},
		{
			name: "engine closes its connection inside an event",
			start: func(t *testing.T) *httptest.Server {
				return startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					w.Header().Set("Content-Type", "text/event-stream")
					rc := http.NewResponseController(w)
					_, _ = io.WriteString(w, "data: {\"n\":1}\n\n")
					_ = rc.Flush()
					_, _ = io.WriteString(w, "data: {\"n\":")
					_ = rc.Flush()
					conn, _, err := rc.Hijack()
					if err != nil {
						panic(http.ErrAbortHandler)
					}
					_ = conn.Close()
				}))
			},
			body: `{"model":"m1","stream":true}`,
			want: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.start(t)
			sc := newSidecar(t, Config{}, instance("a", srv, "m1"))
			resp, body := sc.post(t, "/v1/chat/completions", tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			events, err := newSSEReader(bytes.NewReader(body)).all()
			if err != nil {
				t.Fatalf("the stream must end with a whole event, got %q: %v", body, err)
			}
			if len(events) != tt.want+1 {
				t.Fatalf("got %d events, want %d data events and an error event:\n%s", len(events), tt.want, body)
			}
			for _, e := range events[:tt.want] {
				if !json.Valid([]byte(e)) {
					t.Errorf("event %q before the error is not whole JSON", e)
				}
			}
			checkErrorEvent(t, events[tt.want])
			ep := sc.s.Router().Table().Endpoints()[0]
			waitFor(t, "the request to end", func() bool { return ep.Load.InFlight() == 0 })
			if ep.Load.Failures() != 1 {
				t.Errorf("instance failures = %d, want 1: a broken stream is the instance's fault", ep.Load.Failures())
			}
			if n := testutil.ToFloat64(sc.s.metrics.requests.WithLabelValues("m1", "a", "normal", "502")); n != 1 {
				t.Errorf(`blitz_requests_total{code="502"} = %v, want 1`, n)
			}
		})
	}
}

// TestClientCancelReachesEngine: a client that leaves cancels its upstream
// request at once, whether the stream has started or the engine has not yet
// answered; the in-flight counter returns to zero and the instance is not
// blamed.
func TestClientCancelReachesEngine(t *testing.T) {
	tests := []struct {
		name      string
		cfg       llmsim.Config
		body      string
		readFirst bool
	}{
		{
			name:      "mid-stream",
			cfg:       llmsim.Config{ID: "a", Models: []string{"m1"}, TTFT: time.Millisecond, ITL: time.Hour},
			body:      `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":100,"stream":true}`,
			readFirst: true,
		},
		{
			name: "before the first byte",
			cfg:  llmsim.Config{ID: "a", Models: []string{"m1"}, TTFT: time.Hour},
			body: `{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":100}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, srv := startSim(t, tt.cfg)
			_, spare := startSim(t, simConfig("b", "m1"))
			// Round-robin sends the request to "a" first.
			sc := newSidecar(t, Config{Policy: "round-robin"}, instance("a", srv, "m1"), instance("b", spare, "m1"))
			ep := sc.s.Router().Table().Endpoints()[0]

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opened := make(chan *http.Response, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sc.url+"/v1/chat/completions", strings.NewReader(tt.body))
				resp, err := sc.client.Do(req)
				if err != nil {
					opened <- nil
					return
				}
				opened <- resp
			}()
			if tt.readFirst {
				resp := <-opened
				if resp == nil {
					t.Fatal("the stream did not open")
				}
				defer resp.Body.Close()
				if _, err := newSSEReader(resp.Body).next(); err != nil {
					t.Fatalf("first event: %v", err)
				}
				opened <- nil
			} else {
				waitFor(t, "the engine to start the request", func() bool { return sim.Stats().Running == 1 })
			}
			if n := ep.Load.InFlight(); n != 1 {
				t.Errorf("in flight while open = %d, want 1", n)
			}
			cancel()
			if resp := <-opened; resp != nil {
				resp.Body.Close()
			}
			waitFor(t, "the engine to see the cancellation", func() bool { return sim.Stats().Cancelled == 1 })
			waitFor(t, "the in-flight counter to return to 0", func() bool { return ep.Load.InFlight() == 0 })
			waitFor(t, "the request to be counted as 499", func() bool {
				return testutil.ToFloat64(sc.s.metrics.requests.WithLabelValues("m1", "a", "normal", "499")) == 1
			})
			if n := ep.Load.Failures(); n != 0 {
				t.Errorf("instance failures = %d, want 0: a client's cancellation is not the instance's fault", n)
			}
			if n := testutil.CollectAndCount(sc.s.metrics.retries); n != 0 {
				t.Errorf("%d retry series, want none: a cancelled request is not retried", n)
			}
		})
	}
}

// TestRoutingChangeKeepsOpenStreams: an instance that starts draining or
// leaves the registry takes no new request, but a stream already open to it
// finishes, and its in-flight counter still returns to zero.
func TestRoutingChangeKeepsOpenStreams(t *testing.T) {
	tests := []struct {
		name   string
		change func(a discovery.Instance) []discovery.Instance
	}{
		{name: "instance starts draining", change: func(a discovery.Instance) []discovery.Instance {
			a.Draining = true
			return []discovery.Instance{a}
		}},
		{name: "instance leaves the registry", change: func(discovery.Instance) []discovery.Instance { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t)
			a := instance("a", startBackend(t, heldStream("text/event-stream", "data: 1\n\n", "data: 2\n\ndata: [DONE]\n\n", g)), "m1")
			b := instance("b", startBackend(t, &recorder{}), "m1")
			sc := newSidecar(t, Config{}, a)
			epA := sc.s.Router().Table().Endpoints()[0]

			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			resp := sc.openStream(t, ctx, `{"model":"m1","stream":true}`)
			events := newSSEReader(resp.Body)
			if first, err := events.next(); err != nil || first != "1" {
				t.Fatalf("first event %q, %v", first, err)
			}
			apply(t, sc.s, append(tt.change(a), b)...)
			if r, body := sc.post(t, "/v1/chat/completions", `{"model":"m1"}`); r.Header.Get("X-Blitz-Instance") != "b" {
				t.Errorf("a new request went to %q (%s), want b", r.Header.Get("X-Blitz-Instance"), body)
			}
			g.open()
			rest, err := events.all()
			if err != nil || !slices.Equal(rest, []string{"2", "[DONE]"}) {
				t.Fatalf("the open stream was cut: %q, %v", rest, err)
			}
			waitFor(t, "a's in-flight counter to return to 0", func() bool { return epA.Load.InFlight() == 0 })
		})
	}
}

// TestLargeEventsPassIntact: events larger than a stream's first copy
// buffer (a tool call, logprobs) reach the client whole and unaltered while
// the engine holds the stream open, and so do events larger than the
// largest buffer, which pass through in parts.
func TestLargeEventsPassIntact(t *testing.T) {
	for _, size := range []int{eventBufSize - 10, 3 * eventBufSize, maxEventBufSize + 5000} {
		event := "data: {\"x\":\"" + strings.Repeat("a", size) + "\"}\n\n"
		g := newGate(t)
		srv := startBackend(t, heldStream("text/event-stream", event, "data: [DONE]\n\n", g))
		sc := newSidecar(t, Config{}, instance("big", srv, "m1"))
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		resp := sc.openStream(t, ctx, `{"model":"m1","stream":true}`)
		got := make([]byte, len(event))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != event {
			t.Fatalf("event of %d bytes: got %d bytes (err %v) before the engine went on; want it whole", size, len(got), err)
		}
		g.open()
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "data: [DONE]\n\n" {
			t.Errorf("event of %d bytes: rest %q, %v", size, rest, err)
		}
		cancel()
	}
}
