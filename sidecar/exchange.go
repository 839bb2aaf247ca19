package sidecar

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"sync"

	"github.com/blitzscale/router/routing"
)

const (
	// eventBufSize is an SSE stream's first copy buffer, held for the
	// stream's whole life: token events are a few hundred bytes, and
	// memory per open stream is what a host with thousands of streams
	// pays. An event that does not fit doubles it, up to maxEventBufSize;
	// a larger event passes through in parts.
	eventBufSize    = 1 << 10
	maxEventBufSize = 64 << 10
	// bodyBufSize is the copy buffer of other responses, which are short
	// lived: borrowed from bodyBufs for the copy only.
	bodyBufSize = 16 << 10
	// maxPooledBody: bodies above this are not kept in the pool, so one huge
	// request does not pin memory for good.
	maxPooledBody = 1 << 20
)

// exchange is the per-request scratch of the proxy path: the body buffer,
// the router's request, the upstream body reader and the copy buffer. It is
// pooled. The upstream client writes a request's body completely before its
// round trip returns, so one reader serves every attempt and the exchange
// can go back to the pool when the handler is done.
type exchange struct {
	pool    *sync.Pool
	body    []byte
	req     routing.Request
	fields  bodyFields
	reader  bytes.Reader
	upBody  io.ReadCloser // io.NopCloser(&reader), made once
	getBody func() (io.ReadCloser, error)
	copyBuf []byte
	// out and outURL are the upstream request of an attempt. Nothing holds
	// them once the handler returns: the response, which points back to
	// out, is closed by then.
	out    http.Request
	outURL url.URL
}

func newExchange(pool *sync.Pool) *exchange {
	ex := &exchange{pool: pool, copyBuf: make([]byte, eventBufSize)}
	ex.upBody = io.NopCloser(&ex.reader)
	ex.getBody = func() (io.ReadCloser, error) { return ex.upstreamBody(), nil }
	return ex
}

// acquire prepares a pooled exchange for a new request.
func (ex *exchange) acquire() {
	ex.body = ex.body[:0]
	ex.req.Reset()
	ex.fields = bodyFields{}
}

// release returns the exchange to the pool.
func (ex *exchange) release() {
	if cap(ex.body) > maxPooledBody {
		ex.body = nil
	}
	if len(ex.copyBuf) > eventBufSize {
		ex.copyBuf = make([]byte, eventBufSize) // grown for one stream's large events
	}
	ex.fields = bodyFields{}
	ex.reader.Reset(nil)
	ex.out = http.Request{}
	ex.outURL = url.URL{}
	ex.pool.Put(ex)
}

// bodyBufs holds the copy buffers of non-streaming responses.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, bodyBufSize); return &b }}

// upstreamBody returns the request body rewound for one attempt.
func (ex *exchange) upstreamBody() io.ReadCloser {
	ex.reader.Reset(ex.body)
	return ex.upBody
}
