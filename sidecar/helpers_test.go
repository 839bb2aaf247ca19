package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blitzscale/router/discovery"
	"github.com/blitzscale/router/internal/llmsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait of these tests; a correct sidecar takes
// milliseconds, so hitting it means a bug, never a slow machine.
const waitTimeout = 10 * time.Second

// sidecar is a Server behind a real socket, with a client whose idle
// connections are closed when the test ends.
type sidecar struct {
	s      *Server
	url    string
	client *http.Client
}

// newSidecar serves a new sidecar for the test's duration and, when
// instances are given, applies them as the routing view. Backends must be
// started before it so that it shuts down first (cleanups run in reverse).
func newSidecar(t *testing.T, cfg Config, instances ...discovery.Instance) *sidecar {
	t.Helper()
	s := newServer(t, cfg)
	if len(instances) > 0 {
		apply(t, s, instances...)
	}
	closeUpstreams := trackUpstreams(s)
	front := httptest.NewServer(s)
	t.Cleanup(front.Close)
	t.Cleanup(closeUpstreams) // runs first: see trackUpstreams
	return &sidecar{s: s, url: front.URL, client: front.Client()}
}

// trackUpstreams records every connection s dials to an instance and
// returns a func that closes them all. When the sidecar misbehaves (an
// upstream request that outlives its client), a handler stays blocked on
// its engine and would hang httptest.Server.Close; closing the upstream
// connections first lets a failing test fail instead of hanging. After a
// passing test every connection is idle, so closing them changes nothing.
func trackUpstreams(s *Server) func() {
	var mu sync.Mutex
	var conns []net.Conn
	dial := (&net.Dialer{}).DialContext
	s.rt.Load().transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	return func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}
}

// newServer returns a Server whose upstream transport is closed when the
// test ends, with logs discarded.
func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.rt.Load().transport.CloseIdleConnections)
	return s
}

func apply(t testing.TB, s *Server, instances ...discovery.Instance) {
	t.Helper()
	snap, err := discovery.NewSnapshot("static", instances, time.Now())
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	s.Apply(snap)
}

// instance describes the server srv as an instance serving models.
func instance(id string, srv *httptest.Server, models ...string) discovery.Instance {
	return discovery.Instance{ID: id, Address: srv.Listener.Addr().String(), Models: models}
}

// startBackend serves h on a real socket for the test's duration.
func startBackend(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// startSim serves a new simulator on a real socket for the test's duration.
func startSim(t *testing.T, cfg llmsim.Config) (*llmsim.Sim, *httptest.Server) {
	t.Helper()
	sim, err := llmsim.New(cfg)
	if err != nil {
		t.Fatalf("llmsim.New: %v", err)
	}
	return sim, startBackend(t, sim)
}

// deadAddr returns the address of a listener that has been closed: dialing
// it is refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// recorded is one request as a backend received it.
type recorded struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// recorder is a backend handler that remembers every request and answers
// with reply (nil: echo the body back as JSON).
type recorder struct {
	mu    sync.Mutex
	reqs  []recorded
	reply http.HandlerFunc
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, recorded{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	rc.mu.Unlock()
	if rc.reply != nil {
		rc.reply(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Backend", "echo")
	_, _ = w.Write(body)
}

// requests returns a copy of what the backend has received.
func (rc *recorder) requests() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.reqs)
}

// last returns the last request the backend received; it fails the test if
// there was none.
func (rc *recorder) last(t *testing.T) recorded {
	t.Helper()
	reqs := rc.requests()
	if len(reqs) == 0 {
		t.Fatal("the backend received no request")
	}
	return reqs[len(reqs)-1]
}

// post sends body to the sidecar and returns the response with its body read.
func (sc *sidecar) post(t *testing.T, path, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, sc.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return sc.do(t, req)
}

// get fetches path from the sidecar.
func (sc *sidecar) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, sc.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sc.do(t, req)
}

func (sc *sidecar) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), waitTimeout)
	defer cancel()
	resp, err := sc.client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, b
}

// openStream sends a request and returns the response with its body unread,
// closed when the test ends. ctx bounds every read of the body.
func (sc *sidecar) openStream(t *testing.T, ctx context.Context, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sc.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := sc.client.Do(req)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// sseReader reads the data payloads of an SSE stream, one event at a time.
type sseReader struct{ br *bufio.Reader }

func newSSEReader(r io.Reader) *sseReader { return &sseReader{br: bufio.NewReader(r)} }

// next returns the data of the next event (data lines joined with "\n").
func (r *sseReader) next() (string, error) {
	var data []string
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			if line != "" {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(data) == 0 {
				continue
			}
			return strings.Join(data, "\n"), nil
		}
		if d, ok := strings.CutPrefix(line, "data:"); ok {
			data = append(data, strings.TrimPrefix(d, " "))
		}
	}
}

// all reads every remaining event until EOF and returns their data.
func (r *sseReader) all() ([]string, error) {
	var out []string
	for {
		d, err := r.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
}

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		<-tick.C
	}
}

// wireError is the OpenAI error body; pointers tell absent from null.
type wireError struct {
	Message *string `json:"message"`
	Type    *string `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// checkAPIError asserts an OpenAI-shaped error: the status, exactly the keys
// message, type, param and code under "error", and the type and code.
func checkAPIError(t *testing.T, resp *http.Response, body []byte, status int, typ, code string) wireError {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var shape map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &shape); err != nil {
		t.Fatalf("error body %s is not JSON: %v", body, err)
	}
	if len(shape) != 1 || shape["error"] == nil {
		t.Fatalf("error body %s: want exactly one key, \"error\"", body)
	}
	var keys []string
	for k := range shape["error"] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"code", "message", "param", "type"}; !slices.Equal(keys, want) {
		t.Errorf("error keys = %v, want %v", keys, want)
	}
	var e struct{ Error wireError }
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode error body %s: %v", body, err)
	}
	we := e.Error
	switch {
	case we.Message == nil || *we.Message == "":
		t.Errorf("error %s: message is missing or empty", body)
	case we.Type == nil || *we.Type != typ:
		t.Errorf("error %s: type want %q", body, typ)
	case we.Code == nil || *we.Code != code:
		t.Errorf("error %s: code want %q", body, code)
	}
	if p := bytes.TrimSpace(shape["error"]["param"]); len(p) == 0 || (p[0] != '"' && string(p) != "null") {
		t.Errorf("error %s: param must be a string or null", body)
	}
	return we
}
