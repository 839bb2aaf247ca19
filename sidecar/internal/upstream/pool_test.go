package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestKeepAliveUsesOneConn(t *testing.T) {
	tests := []struct {
		name string
		ctx  func(t *testing.T) context.Context
	}{
		{"background context", func(*testing.T) context.Context { return context.Background() }},
		// A cancelable context arms the cancel watch on every request,
		// which must be disarmed before the connection is pooled.
		{"cancelable context", func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			return ctx
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cc := newServer(t, echoHandler)
			c := newClient(t, &Client{})
			ctx := tt.ctx(t)
			for i := range 20 {
				payload := fmt.Sprintf(`{"request":%d}`, i)
				req := newRequest(t, http.MethodPost, srv.URL+"/v1", strings.NewReader(payload)).WithContext(ctx)
				resp, body := roundTrip(t, c, req)
				if resp.StatusCode != http.StatusCreated || body != "POST /v1 "+payload {
					t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
				}
				if got, want := resp.Header.Get("X-Seen-Length"), fmt.Sprint(len(payload)); got != want {
					t.Fatalf("request %d: server saw Content-Length %s, want %s", i, got, want)
				}
			}
			if n := cc.opened.Load(); n != 1 {
				t.Errorf("server saw %d connections, want 1", n)
			}
			if n := idleLen(c, hostOf(srv.URL)); n != 1 {
				t.Errorf("%d idle connections, want 1", n)
			}
		})
	}
}

// oneShotServer answers one request per connection and then closes it, as
// a server closing idle keep-alive connections does; it logs the bodies it
// received.
func oneShotServer(t *testing.T) (*rawServer, *bodyLog) {
	t.Helper()
	log := &bodyLog{}
	return newRawServer(t, answer(okResponse, 1, log)), log
}

// poolStale pools n connections to srv and waits until the server has
// closed all of them.
func poolStale(t *testing.T, c *Client, srv *rawServer, n int) {
	t.Helper()
	resps := make([]*http.Response, n)
	for i := range resps { // all in flight at once: n connections
		resp, err := c.RoundTrip(newRequest(t, http.MethodGet, srv.url(), nil))
		if err != nil {
			t.Fatalf("RoundTrip: %v", err)
		}
		resps[i] = resp
	}
	for _, resp := range resps {
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatalf("read body: %v", err)
		}
		resp.Body.Close()
	}
	if got := idleLen(c, hostOf(srv.url())); got != n {
		t.Fatalf("%d idle connections, want %d", got, n)
	}
	eventually(t, "server closed its idle connections", func() bool { return srv.closes.Load() == int32(n) })
}

func TestStaleIdleConnRetriedOnNewConn(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"no body", ""},
		{"small body", `{"prompt":"hello"}`},
		// Large enough that the write itself fails, not only the read of
		// the answer.
		{"body larger than socket buffers", strings.Repeat("x", 8<<20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, log := oneShotServer(t)
			c := newClient(t, &Client{})
			poolStale(t, c, srv, 1)
			req := newRequest(t, http.MethodPost, srv.url(), strings.NewReader(tt.body))
			getBody := req.GetBody
			var replays atomic.Int32
			req.GetBody = func() (io.ReadCloser, error) {
				replays.Add(1)
				return getBody()
			}
			resp, body := roundTrip(t, c, req)
			if resp.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("retried request: %d %q", resp.StatusCode, body)
			}
			if n := srv.accepts.Load(); n != 2 {
				t.Errorf("server accepted %d connections, want 2", n)
			}
			if got := log.list(); len(got) != 2 || got[1] != tt.body {
				t.Errorf("server received %d requests, want 2 with the replayed %d-byte body last", len(got), len(tt.body))
			}
			wantReplays := int32(1)
			if tt.body == "" {
				wantReplays = 0 // an empty body is http.NoBody: nothing to replay
			}
			if n := replays.Load(); n != wantReplays {
				t.Errorf("GetBody called %d times, want %d", n, wantReplays)
			}
		})
	}
}

// Regression: with every pooled connection closed by the server (an engine
// restart), the retry took the next pooled connection, found it closed too
// and failed the request. The retry must go to a new connection.
func TestStaleIdleConnRetryDoesNotTakeAnotherStaleConn(t *testing.T) {
	srv, log := oneShotServer(t)
	c := newClient(t, &Client{MaxIdleConnsPerHost: 2})
	poolStale(t, c, srv, 2)
	req := newRequest(t, http.MethodPost, srv.url(), strings.NewReader("payload"))
	if resp, body := roundTrip(t, c, req); resp.StatusCode != http.StatusOK || body != "ok" {
		t.Fatalf("retried request: %d %q", resp.StatusCode, body)
	}
	if diff := cmp.Diff([]string{"", "", "payload"}, log.list()); diff != "" {
		t.Errorf("bodies received (-want +got):\n%s", diff)
	}
}

func TestStaleIdleConnWithoutGetBodyFails(t *testing.T) {
	srv, log := oneShotServer(t)
	c := newClient(t, &Client{})
	poolStale(t, c, srv, 1)
	body := &trackBody{Reader: strings.NewReader("payload")}
	req := newRequest(t, http.MethodPost, srv.url(), body)
	req.ContentLength = int64(len("payload"))
	if req.GetBody != nil {
		t.Fatal("test setup: request has a GetBody")
	}
	resp, err := c.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded, want an error: the body cannot be sent again")
	}
	if !errors.Is(err, errIdleClosed) {
		t.Errorf("err = %v, want errIdleClosed", err)
	}
	if !body.closed.Load() {
		t.Error("request body not closed")
	}
	// No second attempt, in particular none with an empty body.
	if n := srv.accepts.Load(); n != 1 {
		t.Errorf("server accepted %d connections, want 1", n)
	}
	if diff := cmp.Diff([]string{""}, log.list()); diff != "" {
		t.Errorf("bodies received (-want +got):\n%s", diff)
	}
}

// A new connection closed before the answer may have reached a server that
// acted on the request: that is not retried.
func TestFreshConnClosedBeforeAnswerNotRetried(t *testing.T) {
	tests := []struct {
		name   string
		handle func(t *testing.T) *rawServer
	}{
		{"closed at accept", func(t *testing.T) *rawServer { return newRawServer(t, func(net.Conn) {}) }},
		{"closed after reading the request", func(t *testing.T) *rawServer {
			return newRawServer(t, answer("", 1, nil))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.handle(t)
			c := newClient(t, &Client{})
			req := newRequest(t, http.MethodPost, srv.url(), strings.NewReader("payload"))
			resp, err := c.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded against a server that closes at once")
			}
			if errors.Is(err, errIdleClosed) {
				t.Errorf("err = %v: a fresh connection reported as a stale idle one", err)
			}
			if n := srv.accepts.Load(); n != 1 {
				t.Errorf("server accepted %d connections, want 1 (no retry)", n)
			}
		})
	}
}

func TestAbandonedBodyClosesConn(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	srv, cc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			_, _ = io.WriteString(w, big)
			return
		}
		okHandler(w, r)
	})
	c := newClient(t, &Client{})
	resp, err := c.RoundTrip(newRequest(t, http.MethodGet, srv.URL+"/big", nil))
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 10)); err != nil {
		t.Fatalf("read: %v", err)
	}
	resp.Body.Close()
	if n := idleLen(c, hostOf(srv.URL)); n != 0 {
		t.Errorf("%d idle connections after an abandoned body, want 0", n)
	}
	eventually(t, "abandoned connection closed", func() bool { return cc.closed.Load() == 1 })
	get(t, c, srv.URL)
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
}

func TestConnectionCloseNotPooled(t *testing.T) {
	tests := []struct {
		name      string
		respClose bool
		reqClose  bool
	}{
		{name: "response Connection: close", respClose: true},
		{name: "request Close", reqClose: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.respClose {
					w.Header().Set("Connection", "close")
				}
				okHandler(w, r)
			})
			c := newClient(t, &Client{})
			req := newRequest(t, http.MethodGet, srv.URL, nil)
			req.Close = tt.reqClose
			if _, body := roundTrip(t, c, req); body != "ok" {
				t.Fatalf("body = %q", body)
			}
			if n := idleLen(c, hostOf(srv.URL)); n != 0 {
				t.Errorf("%d idle connections, want 0", n)
			}
			eventually(t, "connection closed", func() bool { return cc.closed.Load() == 1 })
			get(t, c, srv.URL)
			if n := cc.opened.Load(); n != 2 {
				t.Errorf("server saw %d connections, want 2", n)
			}
		})
	}
}

// A body without a length ends with the connection, which cannot be reused.
func TestBodyUntilCloseNotPooled(t *testing.T) {
	srv := newRawServer(t, answer("HTTP/1.1 200 OK\r\n\r\nuntil close", 1, nil))
	c := newClient(t, &Client{})
	if _, body := roundTrip(t, c, newRequest(t, http.MethodGet, srv.url(), nil)); body != "until close" {
		t.Fatalf("body = %q", body)
	}
	if n := idleLen(c, hostOf(srv.url())); n != 0 {
		t.Errorf("%d idle connections, want 0", n)
	}
}

func TestEmptyBodyResponsesReturnConn(t *testing.T) {
	tests := []struct {
		name   string
		method string
		status int
	}{
		{"204", http.MethodGet, http.StatusNoContent},
		{"304", http.MethodGet, http.StatusNotModified},
		{"HEAD", http.MethodHead, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/empty" {
					okHandler(w, r)
					return
				}
				w.Header().Set("Content-Length", "5") // a HEAD answer's length has no body
				w.WriteHeader(tt.status)
			})
			c := newClient(t, &Client{})
			resp, body := roundTrip(t, c, newRequest(t, tt.method, srv.URL+"/empty", nil))
			if resp.StatusCode != tt.status || body != "" {
				t.Fatalf("%d %q, want %d \"\"", resp.StatusCode, body, tt.status)
			}
			get(t, c, srv.URL)
			if n := cc.opened.Load(); n != 1 {
				t.Errorf("server saw %d connections, want 1", n)
			}
		})
	}
}

func TestMaxIdleConnsPerHost(t *testing.T) {
	const inFlight = 5
	tests := []struct {
		name     string
		max      int
		wantIdle int
	}{
		{"default", 0, 2},
		{"one", 1, 1},
		{"three", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every request waits for all to arrive: each has its own
			// connection, and all end together.
			var arrived atomic.Int32
			all := make(chan struct{})
			srv, cc := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if arrived.Add(1) == inFlight {
					close(all)
				}
				select {
				case <-all:
				case <-r.Context().Done():
					return
				}
				okHandler(w, r)
			})
			c := newClient(t, &Client{MaxIdleConnsPerHost: tt.max})
			reqs := make([]*http.Request, inFlight)
			for i := range reqs {
				reqs[i] = newRequest(t, http.MethodGet, srv.URL, nil)
			}
			errs := make(chan error, inFlight)
			var wg sync.WaitGroup
			for _, req := range reqs {
				wg.Go(func() {
					resp, err := c.RoundTrip(req)
					if err == nil {
						_, err = io.ReadAll(resp.Body)
						resp.Body.Close()
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("request: %v", err)
				}
			}
			if n := cc.opened.Load(); n != inFlight {
				t.Fatalf("server saw %d connections, want %d", n, inFlight)
			}
			if n := idleLen(c, hostOf(srv.URL)); n != tt.wantIdle {
				t.Errorf("%d idle connections, want %d", n, tt.wantIdle)
			}
			eventually(t, "connections beyond the bound closed", func() bool {
				return cc.closed.Load() == int32(inFlight-tt.wantIdle)
			})
		})
	}
}

// ageIdle moves the idle time of every pooled connection back by d.
func ageIdle(c *Client, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, list := range c.idle {
		for _, cn := range list {
			cn.idleAt = cn.idleAt.Add(-d)
		}
	}
}

func TestIdleConnTimeout(t *testing.T) {
	const timeout = time.Minute
	tests := []struct {
		name       string
		age        time.Duration
		wantOpened int32
	}{
		{"younger than the timeout is reused", timeout / 2, 1},
		{"older than the timeout is not", 2 * timeout, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cc := newServer(t, okHandler)
			c := newClient(t, &Client{IdleConnTimeout: timeout})
			get(t, c, srv.URL)
			ageIdle(c, tt.age)
			get(t, c, srv.URL)
			if n := cc.opened.Load(); n != tt.wantOpened {
				t.Errorf("server saw %d connections, want %d", n, tt.wantOpened)
			}
			eventually(t, "expired connection closed", func() bool { return cc.closed.Load() == tt.wantOpened-1 })
		})
	}
}

// Connections to a host no request goes to any more are closed by the
// sweep that a later request to another host runs.
func TestSweepClosesExpiredConnsOfOtherHosts(t *testing.T) {
	const timeout = time.Minute
	a, ccA := newServer(t, okHandler)
	b, _ := newServer(t, okHandler)
	c := newClient(t, &Client{IdleConnTimeout: timeout})
	get(t, c, a.URL)
	ageIdle(c, 2*timeout)
	c.mu.Lock()
	c.lastSweep = c.lastSweep.Add(-timeout) // due for a sweep
	c.mu.Unlock()
	get(t, c, b.URL)
	c.mu.Lock()
	_, keptA := c.idle[hostOf(a.URL)]
	c.mu.Unlock()
	if keptA {
		t.Error("expired host still in the pool after the sweep")
	}
	if n := idleLen(c, hostOf(b.URL)); n != 1 {
		t.Errorf("%d idle connections to the live host, want 1", n)
	}
	eventually(t, "expired connection closed", func() bool { return ccA.closed.Load() == 1 })
}

func TestCloseIdleConnections(t *testing.T) {
	url, cc, release := newStreamServer(t)
	c := newClient(t, &Client{})
	stream := openStream(t, context.Background(), c, url)
	get(t, c, url) // a second connection, now idle
	c.CloseIdleConnections()
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after CloseIdleConnections, want 0", n)
	}
	eventually(t, "idle connection closed", func() bool { return cc.closed.Load() == 1 })
	// A connection in use when they were closed is pooled when it ends.
	release()
	if _, err := io.ReadAll(stream.Body); err != nil {
		t.Fatalf("read stream: %v", err)
	}
	if n := idleLen(c, hostOf(url)); n != 1 {
		t.Errorf("%d idle connections after the stream ended, want 1", n)
	}
	get(t, c, url)
	if n := cc.opened.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
}

func TestClose(t *testing.T) {
	url, cc, release := newStreamServer(t)
	c := newClient(t, &Client{})
	stream := openStream(t, context.Background(), c, url)
	get(t, c, url) // a second connection, now idle
	c.Close()
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after Close, want 0", n)
	}
	eventually(t, "idle connection closed", func() bool { return cc.closed.Load() == 1 })
	// The response in flight finishes, then its connection closes.
	release()
	b, err := io.ReadAll(stream.Body)
	if err != nil || !bytes.Equal(b, []byte("chunk1chunk2")) {
		t.Fatalf("stream = %q, %v; want \"chunk1chunk2\", nil", b, err)
	}
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after the stream ended, want 0", n)
	}
	eventually(t, "in-flight connection closed", func() bool { return cc.closed.Load() == 2 })
	// Requests still work after Close, on connections that are not kept.
	get(t, c, url)
	if n := idleLen(c, hostOf(url)); n != 0 {
		t.Errorf("%d idle connections after a request on a closed client, want 0", n)
	}
	eventually(t, "connection after Close closed", func() bool { return cc.closed.Load() == 3 })
}
