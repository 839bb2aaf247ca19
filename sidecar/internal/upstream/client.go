// Package upstream is the sidecar's HTTP/1.1 client for the hop to the
// inference engines. Its round trip runs on the caller's goroutine: the
// request is written and the response headers read there, and the body is
// read by whoever reads Response.Body. net/http's Transport hands every
// request to two goroutines of its own (a write loop and a read loop), which
// costs scheduler hand-offs per request and two goroutine stacks per open
// stream; on a host where the engines are a loopback hop away those are most
// of the proxy's cost.
//
// The wire format is net/http's own: requests are written by
// http.Request.Write and responses parsed by http.ReadResponse. This package
// adds only what sits around them: a keep-alive pool per host, deadlines, and
// cancellation by the request's context.
package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Client is an http.RoundTripper for plain-HTTP/1.1 upstreams. The zero
// value is not usable; set the fields, then share it. Fields must not change
// after the first request.
type Client struct {
	// DialTimeout bounds a TCP connect (0: no bound beyond the context's).
	DialTimeout time.Duration
	// DialContext, when set, replaces the TCP dialer (DialTimeout still
	// bounds it).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// ResponseHeaderTimeout bounds the wait for the response headers once
	// the request is written (0: none). Per request, a context deadline
	// applies too.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost is the keep-alive pool's bound per host (0: 2).
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes connections idle for longer (0: 90 s).
	IdleConnTimeout time.Duration
	// ReadBufferSize sizes each connection's read buffer (0: 4 KB), held
	// for the connection's life.
	ReadBufferSize int
	// WriteBufferSize sizes the write buffers (0: 16 KB). They are pooled
	// and held only while a request is written, so a request up to this
	// size goes out in one write without costing memory per connection.
	WriteBufferSize int

	mu        sync.Mutex
	idle      map[string][]*conn // per host, most recently used last
	lastSweep time.Time
	closed    bool      // Close was called: connections are not kept
	writers   sync.Pool // of *connWriter
}

// errIdleClosed marks a reused connection the server had closed before the
// request reached it: the request is sent again on a fresh connection.
var errIdleClosed = errors.New("upstream: server closed the idle connection")

// conn is one keep-alive connection, used by one request at a time.
type conn struct {
	nc     net.Conn
	br     *bufio.Reader
	host   string
	idleAt time.Time
}

// RoundTrip sends req and returns the response once its headers are read.
// Only http URLs are supported. The request body is fully written (or the
// write failed) before RoundTrip returns, so the caller may reuse it then; a
// request sent on a reused connection that the server had closed is sent
// again on a new one, through req.GetBody when the body is not empty.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	return c.RoundTripTimeout(req, c.ResponseHeaderTimeout)
}

// RoundTripTimeout is RoundTrip with this request's own bound on the wait
// for the response headers (0: none) in place of ResponseHeaderTimeout.
func (c *Client) RoundTripTimeout(req *http.Request, headerTimeout time.Duration) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "http" {
		closeBody(req)
		return nil, errors.New("upstream: only http:// URLs are supported")
	}
	if req.URL.Host == "" {
		closeBody(req)
		return nil, errors.New("upstream: no host in request URL")
	}
	ctx := req.Context()
	host := req.URL.Host
	if req.URL.Port() == "" {
		host = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for attempt := 0; ; attempt++ {
		// A retry dials: the next pooled connection may be as stale as the
		// one that failed (all of them are, after the server restarted).
		cn, reused, err := c.get(ctx, host, attempt > 0)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.exchange(ctx, cn, reused, req, headerTimeout)
		if err == nil {
			return resp, nil
		}
		if !(reused && errors.Is(err, errIdleClosed)) || attempt > 0 || ctx.Err() != nil {
			closeBody(req)
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req.Body = body
		}
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// exchange writes req on cn and reads the response headers. On success the
// connection belongs to the returned body until it ends.
func (c *Client) exchange(ctx context.Context, cn *conn, reused bool, req *http.Request, headerTimeout time.Duration) (*http.Response, error) {
	w := &watch{nc: cn.nc}
	if ctx.Done() != nil {
		w.stop = context.AfterFunc(ctx, w.cancel)
	}
	fail := func(err error) (*http.Response, error) {
		w.release()
		_ = cn.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	// A body larger than the socket buffers blocks the write until the
	// server reads it; one that never does meets the same bound as its
	// answer would. Small bodies fit in the kernel's buffers and need no
	// timer.
	bounded := headerTimeout > 0 && (req.ContentLength > largeBody || req.ContentLength < 0)
	if bounded {
		w.setWriteDeadline(time.Now().Add(headerTimeout))
	}
	err := c.write(cn.nc, req)
	if bounded && err == nil {
		w.setWriteDeadline(time.Time{})
	}
	if err != nil {
		if reused && isConnGone(err) {
			err = errors.Join(errIdleClosed, err)
		}
		return fail(err)
	}
	if headerTimeout > 0 {
		w.setReadDeadline(time.Now().Add(headerTimeout))
	}
	// A connection the server closed while idle answers the first read
	// with EOF or a reset before any byte: then the request never reached
	// the server and may be sent again.
	if _, err := cn.br.Peek(1); err != nil {
		if reused && (errors.Is(err, io.EOF) || isConnGone(err)) {
			err = errors.Join(errIdleClosed, err)
		}
		return fail(err)
	}
	var resp *http.Response
	for {
		if resp, err = http.ReadResponse(cn.br, req); err != nil {
			return fail(err)
		}
		// 1xx informational answers precede the real one (101 ends HTTP).
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	w.setReadDeadline(time.Time{})
	resp.Body = &body{client: c, cn: cn, rc: resp.Body, watch: w, ctx: ctx, reuse: !resp.Close && !req.Close}
	return resp, nil
}

// write sends req in as few writes as the pooled buffer allows. A failed
// write to the connection is returned as itself: http.Request.Write reports
// one that happens while it copies the body as a body read error, in a type
// errors.As cannot see through, which would hide a stale connection.
func (c *Client) write(nc net.Conn, req *http.Request) error {
	w, _ := c.writers.Get().(*connWriter)
	if w == nil {
		w = &connWriter{}
		w.bw = bufio.NewWriterSize(w, sizeOr(c.WriteBufferSize, 16<<10))
	}
	w.nc = nc
	err := req.Write(w.bw)
	if err == nil {
		err = w.bw.Flush()
	}
	if w.err != nil {
		err = w.err
	}
	w.bw.Reset(w)
	w.nc, w.err = nil, nil
	c.writers.Put(w)
	return err
}

// connWriter is a pooled write buffer and the connection it writes to,
// whose write error it records.
type connWriter struct {
	bw  *bufio.Writer
	nc  net.Conn
	err error
}

func (w *connWriter) Write(p []byte) (int, error) {
	n, err := w.nc.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// isConnGone reports a read or write that failed because the peer closed
// or reset the connection (not a timeout).
func isConnGone(err error) bool {
	var ne *net.OpError
	if errors.As(err, &ne) && (ne.Op == "write" || ne.Op == "read") && !ne.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// watch ties a connection's deadline to the request's context: a canceled
// request makes the blocked read or write return at once.
type watch struct {
	nc       net.Conn
	stop     func() bool
	mu       sync.Mutex
	canceled bool
}

func (w *watch) cancel() {
	w.mu.Lock()
	w.canceled = true
	_ = w.nc.SetDeadline(aLongTimeAgo)
	w.mu.Unlock()
}

// setReadDeadline sets the read deadline unless the request was canceled,
// which must keep the deadline in the past.
func (w *watch) setReadDeadline(t time.Time) {
	w.mu.Lock()
	if !w.canceled {
		_ = w.nc.SetReadDeadline(t)
	}
	w.mu.Unlock()
}

// setWriteDeadline is setReadDeadline for writes.
func (w *watch) setWriteDeadline(t time.Time) {
	w.mu.Lock()
	if !w.canceled {
		_ = w.nc.SetWriteDeadline(t)
	}
	w.mu.Unlock()
}

// release detaches the context; it reports whether the connection is still
// clean (not canceled).
func (w *watch) release() bool {
	if w.stop != nil && !w.stop() {
		// The cancel func ran or is running; wait for it to finish.
		w.mu.Lock()
		w.mu.Unlock() //nolint:staticcheck // an empty critical section orders us after cancel
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.canceled
}

var aLongTimeAgo = time.Unix(1, 0)

// largeBody is the request body size above which a write is given a
// deadline (loopback socket buffers hold a few hundred KB).
const largeBody = 64 << 10

// body is a response body that hands its connection back to the pool when
// it has been read to its end, and closes it when abandoned earlier. Close
// may be called from another goroutine while a Read is blocked (the
// sidecar's idle timer does): it closes the connection, which ends the Read.
type body struct {
	client *Client
	cn     *conn
	rc     io.ReadCloser
	watch  *watch
	ctx    context.Context
	reuse  bool
	state  atomic.Int32 // bodyOpen, bodyDone, bodyClosed
}

const (
	bodyOpen int32 = iota
	bodyDone
	bodyClosed
)

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	if err == io.EOF {
		if b.state.CompareAndSwap(bodyOpen, bodyDone) {
			if b.watch.release() && b.reuse {
				b.client.put(b.cn)
			} else {
				_ = b.cn.nc.Close()
			}
		}
		return n, io.EOF
	}
	if b.state.Load() == bodyClosed {
		return n, errBodyClosed
	}
	if cerr := b.ctx.Err(); cerr != nil {
		err = cerr
	}
	return n, err
}

var errBodyClosed = errors.New("upstream: read on closed response body")

func (b *body) Close() error {
	if b.state.CompareAndSwap(bodyOpen, bodyClosed) {
		b.watch.release()
		_ = b.cn.nc.Close()
	}
	return nil
}

// get returns an idle connection to host, or dials one (always when fresh).
func (c *Client) get(ctx context.Context, host string, fresh bool) (cn *conn, reused bool, err error) {
	now := time.Now()
	c.mu.Lock()
	list := c.idle[host]
	for len(list) > 0 && !fresh {
		cn = list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if now.Sub(cn.idleAt) < c.idleTimeout() {
			break
		}
		_ = cn.nc.Close()
		cn = nil
	}
	if c.idle != nil {
		c.idle[host] = list
	}
	c.mu.Unlock()
	if cn != nil {
		return cn, true, nil
	}
	nc, err := c.dial(ctx, host)
	if err != nil {
		return nil, false, err
	}
	return &conn{
		nc:   nc,
		br:   bufio.NewReaderSize(nc, sizeOr(c.ReadBufferSize, 4<<10)),
		host: host,
	}, false, nil
}

func (c *Client) dial(ctx context.Context, host string) (net.Conn, error) {
	if c.DialContext == nil {
		d := net.Dialer{Timeout: c.DialTimeout, KeepAlive: 30 * time.Second}
		return d.DialContext(ctx, "tcp", host)
	}
	if c.DialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.DialTimeout)
		defer cancel()
	}
	return c.DialContext(ctx, "tcp", host)
}

// put returns a connection whose response ended to the pool.
func (c *Client) put(cn *conn) {
	now := time.Now()
	cn.idleAt = now
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle == nil {
		c.idle = make(map[string][]*conn)
	}
	if now.Sub(c.lastSweep) > c.idleTimeout()/2 {
		c.sweepLocked(now)
	}
	list := c.idle[cn.host]
	if c.closed || len(list) >= sizeOr(c.MaxIdleConnsPerHost, 2) {
		_ = cn.nc.Close()
		return
	}
	c.idle[cn.host] = append(list, cn)
}

// sweepLocked closes connections idle for too long, including those to
// hosts no request goes to any more.
func (c *Client) sweepLocked(now time.Time) {
	c.lastSweep = now
	for host, list := range c.idle {
		kept := list[:0]
		for _, cn := range list {
			if now.Sub(cn.idleAt) < c.idleTimeout() {
				kept = append(kept, cn)
			} else {
				_ = cn.nc.Close()
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(c.idle, host)
		} else {
			c.idle[host] = kept
		}
	}
}

// CloseIdleConnections closes every pooled connection; connections in use
// return to the pool when their responses end.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeIdleLocked()
}

// Close retires the client: idle connections close now, connections in use
// when their responses end. Requests still work, on connections that are
// not kept.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closeIdleLocked()
}

func (c *Client) closeIdleLocked() {
	for host, list := range c.idle {
		for _, cn := range list {
			_ = cn.nc.Close()
		}
		delete(c.idle, host)
	}
}

func (c *Client) idleTimeout() time.Duration { return durationOr(c.IdleConnTimeout, 90*time.Second) }

func sizeOr(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
