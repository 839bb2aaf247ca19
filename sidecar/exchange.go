package sidecar

import (
	"bytes"
	"sync"
	"sync/atomic"

	"github.com/blitzscale/router/routing"
)

const (
	// copyBufSize is the stream copy buffer: larger than any SSE event an
	// engine sends, so events are forwarded whole.
	copyBufSize = 32 << 10
	// maxPooledBody: bodies above this are not kept in the pool, so one huge
	// request does not pin memory for good.
	maxPooledBody = 1 << 20
	// maxUpstreamAttempts mirrors the router's bound (first try + retries).
	maxUpstreamAttempts = maxRetriesLimit + 1
)

// exchange is the per-request scratch of the proxy path: the body buffer,
// the router's request, the upstream bodies and the copy buffer. It is
// pooled. Because http.Transport may still read a request body after
// RoundTrip returns, the exchange is reference-counted: the handler holds one
// reference and each upstream body another, and the last release returns it
// to the pool.
type exchange struct {
	pool    *sync.Pool
	refs    atomic.Int32
	body    []byte
	req     routing.Request
	fields  bodyFields
	bodies  [maxUpstreamAttempts]upstreamBody
	nbodies int
	copyBuf []byte
}

func newExchange(pool *sync.Pool) *exchange {
	return &exchange{pool: pool, copyBuf: make([]byte, copyBufSize)}
}

// acquire prepares a pooled exchange for a new request.
func (ex *exchange) acquire() {
	ex.refs.Store(1)
	ex.body = ex.body[:0]
	ex.req.Reset()
	ex.fields = bodyFields{}
	ex.nbodies = 0
}

// release drops the handler's reference.
func (ex *exchange) release() { ex.unref() }

func (ex *exchange) unref() {
	if ex.refs.Add(-1) != 0 {
		return
	}
	if cap(ex.body) > maxPooledBody {
		ex.body = nil
	}
	ex.fields = bodyFields{}
	ex.pool.Put(ex)
}

// upstreamBody returns a fresh reader over the request body for one
// attempt, holding a reference until the transport closes it.
func (ex *exchange) upstreamBody() *upstreamBody {
	b := &ex.bodies[ex.nbodies]
	ex.nbodies++
	b.ex = ex
	b.Reset(ex.body)
	b.closed.Store(false)
	ex.refs.Add(1)
	return b
}

// upstreamBody is an io.ReadCloser over the exchange's body.
type upstreamBody struct {
	bytes.Reader
	ex     *exchange
	closed atomic.Bool
}

// Close releases the body's reference; the transport calls it once it is
// done writing, possibly after RoundTrip returned.
func (b *upstreamBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.ex.unref()
	}
	return nil
}
