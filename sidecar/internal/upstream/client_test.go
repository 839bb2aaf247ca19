package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// echoHandler answers 201 with what it received: method, path and body in
// the body, length, transfer encoding and a test header in headers.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("X-Seen-Length", strconv.FormatInt(r.ContentLength, 10))
	h.Set("X-Seen-Encoding", strings.Join(r.TransferEncoding, ","))
	h.Set("X-Seen-Header", r.Header.Get("X-Test"))
	h["X-Multi"] = []string{"a", "b"}
	w.WriteHeader(http.StatusCreated)
	_, _ = fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
}

func TestRoundTripCarriesRequestAndResponseIntact(t *testing.T) {
	srv, _ := newServer(t, echoHandler)
	// A write buffer smaller than some bodies below: those go out in
	// several writes.
	c := newClient(t, &Client{WriteBufferSize: 1 << 10})
	big := strings.Repeat("0123456789abcdef", 4<<10) // 64 KB
	tests := []struct {
		name       string
		method     string
		body       io.Reader
		wantLength string
		wantEnc    string
		wantBody   string
	}{
		{name: "get without body", method: http.MethodGet, wantLength: "0", wantBody: ""},
		{name: "post with length", method: http.MethodPost, body: strings.NewReader(`{"prompt":"hi"}`), wantLength: "15", wantBody: `{"prompt":"hi"}`},
		{name: "post larger than write buffer", method: http.MethodPost, body: strings.NewReader(big), wantLength: strconv.Itoa(len(big)), wantBody: big},
		// A reader of unknown length goes out chunked.
		{name: "post chunked", method: http.MethodPost, body: iotest.HalfReader(strings.NewReader(big)), wantLength: "-1", wantEnc: "chunked", wantBody: big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(t, tt.method, srv.URL+"/v1/completions", tt.body)
			req.Header.Set("X-Test", "value")
			resp, body := roundTrip(t, c, req)
			if resp.StatusCode != http.StatusCreated {
				t.Errorf("status = %d, want 201", resp.StatusCode)
			}
			got := map[string][]string{
				"length":   {resp.Header.Get("X-Seen-Length")},
				"encoding": {resp.Header.Get("X-Seen-Encoding")},
				"header":   {resp.Header.Get("X-Seen-Header")},
				"multi":    resp.Header["X-Multi"],
			}
			want := map[string][]string{
				"length":   {tt.wantLength},
				"encoding": {tt.wantEnc},
				"header":   {"value"},
				"multi":    {"a", "b"},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("headers (-want +got):\n%s", diff)
			}
			if wantBody := tt.method + " /v1/completions " + tt.wantBody; body != wantBody {
				t.Errorf("body = %.80q (%d bytes), want %.80q (%d bytes)", body, len(body), wantBody, len(wantBody))
			}
		})
	}
}

// The sidecar holds a small read buffer for a connection's life; a header
// line longer than the buffer must still parse.
func TestRoundTripSmallReadBufferReadsLongHeaders(t *testing.T) {
	long := strings.Repeat("x", 8<<10)
	srv, _ := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Long", long)
		_, _ = io.WriteString(w, "ok")
	})
	c := newClient(t, &Client{ReadBufferSize: 16})
	resp, body := roundTrip(t, c, newRequest(t, http.MethodGet, srv.URL, nil))
	if got := resp.Header.Get("X-Long"); got != long || body != "ok" {
		t.Fatalf("X-Long is %d bytes, body %q; want %d bytes, \"ok\"", len(got), body, len(long))
	}
}

func TestRoundTripSkipsInformationalResponses(t *testing.T) {
	const final = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	tests := []struct {
		name   string
		before string
	}{
		{"100 continue", "HTTP/1.1 100 Continue\r\n\r\n"},
		{"103 early hints with headers", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"},
		{"two informational", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, answer(tt.before+final, 0, nil))
			c := newClient(t, &Client{})
			for i := range 2 {
				resp, body := roundTrip(t, c, newRequest(t, http.MethodGet, srv.url(), nil))
				if resp.StatusCode != http.StatusOK || body != "ok" {
					t.Fatalf("request %d: %d %q, want 200 \"ok\"", i, resp.StatusCode, body)
				}
				if link := resp.Header.Get("Link"); link != "" {
					t.Errorf("request %d: informational header leaked into the response: Link %q", i, link)
				}
			}
			// The second request reused the connection: the informational
			// answers left the stream in step.
			if n := srv.accepts.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1", n)
			}
		})
	}
}

func TestRoundTripRejectsUnsupportedURL(t *testing.T) {
	tests := []struct {
		name string
		url  string // "" builds a request with a nil URL
	}{
		{"https", "https://127.0.0.1:1/"},
		{"ftp", "ftp://127.0.0.1:1/"},
		{"no scheme", "//127.0.0.1:1/"},
		// Not a dial to ":80", which is this host.
		{"no host", "http:///v1/models"},
		{"nil url", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, &Client{})
			body := &trackBody{Reader: strings.NewReader("x")}
			req := newRequest(t, http.MethodPost, "http://placeholder/", body)
			req.URL = nil
			if tt.url != "" {
				req = newRequest(t, http.MethodPost, tt.url, body)
			}
			resp, err := c.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			if !body.closed.Load() {
				t.Error("request body not closed (http.RoundTripper must close it, even on errors)")
			}
		})
	}
}

func TestRoundTripDialErrorReturnsPromptly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the dial is refused
	c := newClient(t, &Client{})
	body := &trackBody{Reader: strings.NewReader("payload")}
	req := newRequest(t, http.MethodPost, "http://"+addr+"/", body)
	resp, err := promptly(t, func() (*http.Response, error) { return c.RoundTrip(req) })
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip to a closed port succeeded")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("err = %v, want a dial *net.OpError", err)
	}
	if !body.closed.Load() {
		t.Error("request body not closed after the dial error")
	}
}

func TestRoundTripUsesDialContext(t *testing.T) {
	srv, _ := newServer(t, okHandler)
	var calls []string // the dialer runs on the caller's goroutine
	c := newClient(t, &Client{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		calls = append(calls, network+" "+addr)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}})
	get(t, c, srv.URL)
	get(t, c, srv.URL) // pooled: no second dial
	if diff := cmp.Diff([]string{"tcp " + hostOf(srv.URL)}, calls); diff != "" {
		t.Errorf("dials (-want +got):\n%s", diff)
	}
}

func TestRoundTripDialTimeoutBoundsDialContext(t *testing.T) {
	const timeout = 50 * time.Millisecond
	var hadDeadline atomic.Bool
	c := newClient(t, &Client{
		DialTimeout: timeout,
		// A dialer that hangs until its context ends, as a connect to a
		// black-holed address does.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if d, ok := ctx.Deadline(); ok && time.Until(d) <= timeout {
				hadDeadline.Store(true)
			}
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	// The request's own deadline only keeps a broken DialTimeout from
	// hanging the test: promptly fails first.
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	req := newRequest(t, http.MethodGet, "http://127.0.0.1:1/", nil).WithContext(ctx)
	resp, err := promptly(t, func() (*http.Response, error) { return c.RoundTrip(req) })
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded through a hanging dialer")
	}
	if !hadDeadline.Load() {
		t.Errorf("DialContext got a context without a deadline within DialTimeout %v", timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

// A URL without a port is an http URL like any other: it dials port 80.
func TestRoundTripDialsPort80WhenURLHasNoPort(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host)
	})
	var dialed string
	c := newClient(t, &Client{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialed = addr
		var d net.Dialer
		return d.DialContext(ctx, network, hostOf(srv.URL))
	}})
	_, body := roundTrip(t, c, newRequest(t, http.MethodGet, "http://engine.test/v1/models", nil))
	if dialed != "engine.test:80" || body != "engine.test" {
		t.Errorf("dialed %q, server saw Host %q; want \"engine.test:80\", \"engine.test\"", dialed, body)
	}
}

func TestRoundTripResponseHeaderTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	tests := []struct {
		name      string
		client    *Client
		roundTrip func(c *Client, req *http.Request) (*http.Response, error)
	}{
		{"client field", &Client{ResponseHeaderTimeout: timeout}, (*Client).RoundTrip},
		{"per request", &Client{}, func(c *Client, req *http.Request) (*http.Response, error) {
			return c.RoundTripTimeout(req, timeout)
		}},
		{"per request overrides field", &Client{ResponseHeaderTimeout: time.Hour}, func(c *Client, req *http.Request) (*http.Response, error) {
			return c.RoundTripTimeout(req, timeout)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, neverAnswer(nil))
			c := newClient(t, tt.client)
			req := newRequest(t, http.MethodGet, srv.url(), nil)
			resp, err := promptly(t, func() (*http.Response, error) { return tt.roundTrip(c, req) })
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded against a server that never answers")
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("err = %v, want a net.Error with Timeout()", err)
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v, want os.ErrDeadlineExceeded", err)
			}
			eventually(t, "timed-out connection closed", func() bool { return srv.closes.Load() == 1 })
			if n := idleLen(c, hostOf(srv.url())); n != 0 {
				t.Errorf("%d idle connections, want 0", n)
			}
		})
	}
}

// TestLargeBodyWriteBoundedByHeaderTimeout: a server that accepts a
// connection and never reads cannot hold a large request's write forever:
// the first-byte timeout bounds it too.
func TestLargeBodyWriteBoundedByHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newRawServer(t, func(nc net.Conn) { <-release }) // reads nothing
	t.Cleanup(func() { close(release) })
	c := newClient(t, &Client{ResponseHeaderTimeout: 100 * time.Millisecond})
	body := strings.Repeat("x", 64<<20) // far beyond loopback socket buffers
	req := newRequest(t, http.MethodPost, srv.url(), strings.NewReader(body))
	resp, err := promptly(t, func() (*http.Response, error) { return c.RoundTrip(req) })
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded against a server that reads nothing")
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("err = %v, want os.ErrDeadlineExceeded", err)
	}
}

// RoundTripTimeout with 0 waits without bound even when the client has a
// header timeout: a model known to be slow to first token gets its own.
func TestRoundTripTimeoutZeroOverridesField(t *testing.T) {
	const timeout = 20 * time.Millisecond
	release := make(chan struct{})
	var once sync.Once
	done := func() { once.Do(func() { close(release) }) }
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		okHandler(w, r)
	})
	t.Cleanup(done)
	c := newClient(t, &Client{ResponseHeaderTimeout: timeout})
	go func() {
		time.Sleep(5 * timeout) // answers after the field's timeout; not a wait for a state
		done()
	}()
	resp, err := c.RoundTripTimeout(newRequest(t, http.MethodGet, srv.URL, nil), 0)
	if err != nil {
		t.Fatalf("RoundTripTimeout(0): %v", err)
	}
	resp.Body.Close()
}

// The header timeout ends with the headers: a stream whose body takes longer
// than it is not cut, nor is the next request on the pooled connection.
func TestResponseHeaderTimeoutDoesNotBoundBody(t *testing.T) {
	const timeout = 20 * time.Millisecond
	url, cc, release := newStreamServer(t)
	c := newClient(t, &Client{ResponseHeaderTimeout: timeout})
	resp := openStream(t, context.Background(), c, url)
	time.Sleep(5 * timeout) // lets the header timeout pass; not a wait for a state
	release()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "chunk1chunk2" {
		t.Fatalf("body = %q, %v; want \"chunk1chunk2\", nil", b, err)
	}
	time.Sleep(5 * timeout) // as above, for the pooled connection
	get(t, c, url)
	if n := cc.opened.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
}

func TestRoundTripContextEndsWaitForHeaders(t *testing.T) {
	tests := []struct {
		name string
		ctx  func(got <-chan struct{}) (context.Context, context.CancelFunc)
		want error
	}{
		{
			name: "canceled",
			ctx: func(got <-chan struct{}) (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				go func() {
					select {
					case <-got: // the request reached the server
						cancel()
					case <-ctx.Done():
					}
				}()
				return ctx, cancel
			},
			want: context.Canceled,
		},
		{
			name: "deadline",
			ctx: func(<-chan struct{}) (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 50*time.Millisecond)
			},
			want: context.DeadlineExceeded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan struct{}, 1)
			srv := newRawServer(t, neverAnswer(got))
			c := newClient(t, &Client{})
			ctx, cancel := tt.ctx(got)
			defer cancel()
			req := newRequest(t, http.MethodGet, srv.url(), nil).WithContext(ctx)
			resp, err := promptly(t, func() (*http.Response, error) { return c.RoundTrip(req) })
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded against a server that never answers")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			eventually(t, "abandoned connection closed", func() bool { return srv.closes.Load() == 1 })
		})
	}
}

func TestBodyStreamsWithoutBuffering(t *testing.T) {
	url, cc, release := newStreamServer(t)
	c := newClient(t, &Client{})
	resp := openStream(t, context.Background(), c, url)
	readChunk1(t, resp.Body) // before chunk2 is even written
	release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "chunk2" {
		t.Fatalf("rest = %q, %v; want \"chunk2\", nil", rest, err)
	}
	// A stream read to its end hands its connection back.
	get(t, c, url)
	if n := cc.opened.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
}

func TestBodyReadEndsWhenContextCanceled(t *testing.T) {
	url, cc, _ := newStreamServer(t)
	c := newClient(t, &Client{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := openStream(t, ctx, c, url)
	readChunk1(t, resp.Body)
	done := blockedRead(resp.Body)
	cancel()
	if err := receive(t, done, "Read after cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("Read err = %v, want context.Canceled", err)
	}
	resp.Body.Close()
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after a canceled stream, want 0", n)
	}
	eventually(t, "canceled stream's connection closed", func() bool { return cc.closed.Load() == 1 })
	get(t, c, url)
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2 (the canceled one not reused)", n)
	}
}

// The sidecar's idle timer closes a body while the proxy goroutine is
// blocked reading it.
func TestBodyCloseEndsConcurrentRead(t *testing.T) {
	url, cc, _ := newStreamServer(t)
	c := newClient(t, &Client{})
	resp := openStream(t, context.Background(), c, url)
	readChunk1(t, resp.Body)
	done := blockedRead(resp.Body)
	if err := resp.Body.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := receive(t, done, "Read after Close"); !errors.Is(err, errBodyClosed) {
		t.Errorf("Read err = %v, want errBodyClosed", err)
	}
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after Close, want 0", n)
	}
	get(t, c, url)
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2 (the closed one not reused)", n)
	}
}

// Canceling a request's context after its body ended must not reach the
// connection, which by then serves other requests from the pool.
func TestCancelAfterBodyEndKeepsConn(t *testing.T) {
	srv, cc := newServer(t, okHandler)
	c := newClient(t, &Client{})
	ctx, cancel := context.WithCancel(context.Background())
	_, body := roundTrip(t, c, newRequest(t, http.MethodGet, srv.URL, nil).WithContext(ctx))
	cancel()
	if body != "ok" {
		t.Fatalf("body = %q", body)
	}
	for range 3 {
		get(t, c, srv.URL)
	}
	if n := cc.opened.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1", n)
	}
}

// A canceled context that is not the request's own cancels nothing: one
// request's cancellation must not spoil another's body on the same pool.
func TestCancelOneRequestLeavesOthers(t *testing.T) {
	url, _, release := newStreamServer(t)
	c := newClient(t, &Client{})
	keep := openStream(t, context.Background(), c, url)
	ctx, cancel := context.WithCancel(context.Background())
	openStream(t, ctx, c, url)
	cancel()
	release()
	b, err := io.ReadAll(keep.Body)
	if err != nil || !bytes.Equal(b, []byte("chunk1chunk2")) {
		t.Fatalf("uncanceled body = %q, %v; want \"chunk1chunk2\", nil", b, err)
	}
}
