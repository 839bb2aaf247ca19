package sidecar

import (
	"bytes"
	"context"
	"io"
	"net/http/httptrace"
	"sync"
	"sync/atomic"

	"github.com/blitzscale/router/routing"
)

const (
	// copyBufSize is the response copy buffer, held for a stream's whole
	// life: larger than the SSE events of token streams (a few hundred
	// bytes), small enough to keep memory per open stream low. A larger
	// event passes through in parts.
	copyBufSize = 8 << 10
	// maxPooledBody: bodies above this are not kept in the pool, so one huge
	// request does not pin memory for good.
	maxPooledBody = 1 << 20
	// maxUpstreamAttempts mirrors the router's bound (first try + retries).
	maxUpstreamAttempts = maxRetriesLimit + 1
)

// exchange is the per-request scratch of the proxy path: the body buffer,
// the router's request, the upstream bodies and the copy buffer. It is
// pooled.
//
// http.Transport may still be writing a request body after RoundTrip
// returns (an engine that answers before reading it all), so the exchange is
// reference-counted: the handler holds one reference and each attempt
// another until the transport reports, through httptrace's WroteRequest,
// that it is done with the body. The last release returns the exchange to
// the pool; an attempt that never wrote (a dial error) leaves it to the
// garbage collector instead. The bodies are io.NopCloser over
// *bytes.Reader on purpose: net/http recognises that pair as in memory and
// sends headers and body in one write instead of two.
type exchange struct {
	pool    *sync.Pool
	refs    atomic.Int32
	body    []byte
	req     routing.Request
	fields  bodyFields
	readers [maxUpstreamAttempts]bytes.Reader
	bodies  [maxUpstreamAttempts]io.ReadCloser // NopCloser(&readers[i]), made once
	nbodies int
	trace   *httptrace.ClientTrace
	copyBuf []byte
}

func newExchange(pool *sync.Pool) *exchange {
	ex := &exchange{pool: pool, copyBuf: make([]byte, copyBufSize)}
	for i := range ex.bodies {
		ex.bodies[i] = io.NopCloser(&ex.readers[i])
	}
	ex.trace = &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { ex.unref() }}
	return ex
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
// attempt and the context to send it with, whose trace releases the
// attempt's reference once the transport has written the body.
func (ex *exchange) upstreamBody(ctx context.Context) (io.ReadCloser, context.Context) {
	i := ex.nbodies
	ex.nbodies++
	ex.readers[i].Reset(ex.body)
	ex.refs.Add(1)
	return ex.bodies[i], httptrace.WithClientTrace(ctx, ex.trace)
}
