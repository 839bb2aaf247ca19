package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// server below is closed by its test, and the client itself starts none
// that outlive a request.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait in these tests, including "promptly": on a
// loopback hop everything asserted here happens in milliseconds, so a
// generous bound catches a hang without flaking on a loaded machine.
const waitFor = 5 * time.Second

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, waitFor)
		}
		time.Sleep(2 * time.Millisecond) // poll interval, not a wait for state
	}
}

// receive returns the value sent on ch, failing the test after waitFor.
func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatalf("%s: nothing within %v", what, waitFor)
		panic("unreachable")
	}
}

// promptly runs a round trip that must end within waitFor, failing the test
// (not hanging it) when it does not; the round trip then goes on in the
// background until the servers' cleanup ends it.
func promptly(t testing.TB, rt func() (*http.Response, error)) (*http.Response, error) {
	t.Helper()
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := rt()
		done <- result{resp, err}
	}()
	r := receive(t, done, "round trip")
	return r.resp, r.err
}

// connCounter counts a server's connections as net/http reports them.
type connCounter struct {
	opened atomic.Int32
	closed atomic.Int32
}

// newServer starts an httptest server running h, counting its
// connections; it is closed when the test ends.
func newServer(t testing.TB, h http.HandlerFunc) (*httptest.Server, *connCounter) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	cc := &connCounter{}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			cc.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			cc.closed.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, cc
}

// newClient returns c, closed when the test ends.
func newClient(t testing.TB, c *Client) *Client {
	t.Helper()
	t.Cleanup(c.Close)
	return c
}

// newRequest builds a request with a background context; tests that cancel
// use req.WithContext.
func newRequest(t testing.TB, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	return req
}

// roundTrip sends req, reads the whole body and closes it.
func roundTrip(t testing.TB, c *Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip %s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

// get is a GET to url whose body must read "ok".
func get(t testing.TB, c *Client, url string) {
	t.Helper()
	resp, body := roundTrip(t, c, newRequest(t, http.MethodGet, url, nil))
	if resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("GET %s: %d %q, want 200 \"ok\"", url, resp.StatusCode, body)
	}
}

// idleLen is the number of pooled connections to host.
func idleLen(c *Client, host string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle[host])
}

// okHandler answers every request with "ok".
func okHandler(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }

// trackBody is a request body that records its Close.
type trackBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackBody) Close() error {
	b.closed.Store(true)
	return nil
}

// rawServer is a TCP server on loopback whose connections are handed to
// handle, for misbehaviour net/http will not produce: closing at once,
// never answering, fixed bytes. A connection is closed when handle returns.
type rawServer struct {
	ln      net.Listener
	handle  func(net.Conn)
	accepts atomic.Int32
	closes  atomic.Int32 // connections closed after handle returned
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	done    bool
	wg      sync.WaitGroup
}

func newRawServer(t testing.TB, handle func(net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &rawServer{ln: ln, handle: handle, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *rawServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			_ = nc.Close()
			continue
		}
		s.conns[nc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(nc)
			_ = nc.Close()
			s.mu.Lock()
			delete(s.conns, nc)
			s.mu.Unlock()
			s.closes.Add(1)
		}()
	}
}

// close stops accepting, cuts every open connection (which ends handlers
// blocked reading) and waits for the handlers.
func (s *rawServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	s.done = true
	for nc := range s.conns {
		_ = nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// bodyLog records the request bodies a raw server received.
type bodyLog struct {
	mu     sync.Mutex
	bodies []string
}

func (l *bodyLog) add(b string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bodies = append(l.bodies, b)
}

func (l *bodyLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bodies...)
}

// answer reads up to max requests (0: any number) from a connection,
// logging their bodies in log when not nil, and writes resp verbatim after
// each; then the raw server closes the connection.
func answer(resp string, max int, log *bodyLog) func(net.Conn) {
	return func(nc net.Conn) {
		br := bufio.NewReader(nc)
		for i := 0; max <= 0 || i < max; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			if log != nil {
				log.add(string(b))
			}
			if _, err := io.WriteString(nc, resp); err != nil {
				return
			}
		}
	}
}

// neverAnswer reads one request, signals got (when not nil), then reads
// until the client closes the connection, never writing a byte.
func neverAnswer(got chan<- struct{}) func(net.Conn) {
	return func(nc net.Conn) {
		br := bufio.NewReader(nc)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		if got != nil {
			select {
			case got <- struct{}{}:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, br)
	}
}

// okResponse is a minimal keep-alive answer.
const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// hostOf is the host:port of a server URL, the pool's key.
func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// streamHandler writes and flushes "chunk1", then waits for release (or the
// client going away) before writing "chunk2". Other paths answer "ok".
func streamHandler(release <-chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			okHandler(w, r)
			return
		}
		_, _ = io.WriteString(w, "chunk1")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "chunk2")
	}
}

// newStreamServer starts a streamHandler server; release is closed at the
// latest when the test ends, before the server is.
func newStreamServer(t *testing.T) (srv string, cc *connCounter, release func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	s, cc := newServer(t, streamHandler(ch))
	t.Cleanup(release)
	return s.URL, cc, release
}

// openStream opens url's /stream with ctx, returning once the headers are
// read: promptly, since the server sends them at once. Its body is closed
// when the test ends, before the server is.
func openStream(t *testing.T, ctx context.Context, c *Client, url string) *http.Response {
	t.Helper()
	req := newRequest(t, http.MethodGet, url+"/stream", nil).WithContext(ctx)
	// A client that waited for the whole body would not return at all.
	resp, err := promptly(t, func() (*http.Response, error) { return c.RoundTrip(req) })
	if err != nil {
		t.Fatalf("RoundTrip %s: %v", req.URL, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readChunk1 reads the first chunk of a stream, failing the test unless it
// arrives within waitFor.
func readChunk1(t *testing.T, body io.Reader) {
	t.Helper()
	type result struct {
		s   string
		err error
	}
	done := make(chan result, 1)
	go func() {
		buf := make([]byte, len("chunk1"))
		_, err := io.ReadFull(body, buf)
		done <- result{string(buf), err}
	}()
	r := receive(t, done, "first chunk")
	if r.err != nil || r.s != "chunk1" {
		t.Fatalf("first chunk = %q, %v; want \"chunk1\", nil", r.s, r.err)
	}
}

// blockedRead starts a Read on body and returns its error when it ends.
func blockedRead(body io.Reader) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := body.Read(make([]byte, 64))
		done <- err
	}()
	return done
}
