package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blitzscale/router/routing"
)

// errStreamIdle replaces the read error of a body closed for idleness.
var errStreamIdle = errors.New("sidecar: stream idle timeout")

// statusClientClosed labels requests whose client went away (nginx's 499).
const statusClientClosed = 499

// relay copies the instance's response to the client and returns the status
// for metrics. SSE streams are forwarded event by event, each flushed at
// once; other bodies of unknown length are flushed per read, like
// httputil.ReverseProxy does. A stream that breaks after its first byte ends
// with an SSE error event instead of a silent truncation.
//
// An SSE stream's headers are held back until its first event: engines
// (vLLM, the simulator) send them when they admit the request, before a
// prefill that may take seconds, and an engine that dies or stalls in that
// window has not reached the client yet. relay then writes nothing and
// returns the read error, so the caller can retry on another instance; the
// error is nil whenever something was written.
func (s *Server) relay(w http.ResponseWriter, resp *http.Response, ex *exchange, ep *routing.Endpoint, route routing.Route, sent time.Time) (int, error) {
	defer resp.Body.Close()
	sse := isEventStream(resp.Header)
	committed := false // headers written
	if !sse {
		// Headers are the first byte of a non-streaming answer.
		ep.Load.ObserveTTFT(s.now().Sub(sent))
		writeHead(w, resp, ep, route)
		committed = true
	}

	rc := http.NewResponseController(w)
	flush := sse || resp.ContentLength < 0
	var idle *time.Timer
	var idled atomic.Bool
	if flush && s.conf().StreamIdleTimeout > 0 {
		// A hung engine mid-stream: closing the body ends the blocked Read.
		wait := s.conf().StreamIdleTimeout
		if sse {
			// Until its first byte, a stream is bounded by the first-byte
			// timeout: its headers came at admission, before the prefill.
			wait = max(s.conf().firstByteTimeout(ex.req.ModelName)-s.now().Sub(sent), time.Millisecond)
		}
		idle = time.AfterFunc(wait, func() {
			idled.Store(true)
			resp.Body.Close()
		})
		defer idle.Stop()
	}
	buf := ex.copyBuf
	if !sse {
		bp := bodyBufs.Get().(*[]byte)
		defer bodyBufs.Put(bp)
		buf = *bp
	}
	var itl prometheus.Observer
	pending := 0
	first := true
	lastEvent := sent
	for {
		n, rerr := resp.Body.Read(buf[pending:])
		pending += n
		if idle != nil && n > 0 {
			idle.Reset(s.conf().StreamIdleTimeout)
		}
		if rerr != nil && idled.Load() {
			rerr = errStreamIdle
		}
		cut := pending
		if sse && rerr == nil {
			// Hold a partial event until its end arrives, growing the
			// buffer for a large one; an event beyond the largest buffer
			// passes through in parts.
			if cut = lastEventEnd(buf[:pending]); cut == 0 && pending < len(buf) {
				continue
			}
			if cut == 0 && len(buf) < maxEventBufSize {
				buf = append(buf[:pending], make([]byte, len(buf))...)
				buf = buf[:cap(buf)]
				ex.copyBuf = buf
				continue
			}
			if cut == 0 {
				cut = pending
			}
		}
		if rerr != nil && rerr != io.EOF && sse {
			cut = 0 // drop a partial event: the error event replaces it
		}
		if cut > 0 {
			if sse {
				now := s.now()
				k := bytes.Count(buf[:cut], eventEnd)
				if first {
					ep.Load.ObserveTTFT(now.Sub(sent))
					s.metrics.ttft(ex.req.ModelName, now.Sub(sent))
					first = false
					// Events that arrived with the first one reach the
					// client at the same instant: their gaps are zero.
					if k > 1 {
						observeN(s.metrics.itlObserver(ex.req.ModelName), 0, k-1)
					}
				} else if k > 0 {
					if itl == nil {
						itl = s.metrics.itlObserver(ex.req.ModelName) // once per stream, not per event
					}
					observeN(itl, now.Sub(lastEvent)/time.Duration(k), k)
				}
				lastEvent = now
			}
			if prompt, completion, ok := parseUsage(buf[:cut]); ok {
				s.metrics.tokens(ex.req.ModelName, prompt, completion)
			}
			if !committed {
				writeHead(w, resp, ep, route)
				committed = true
			}
			if _, werr := w.Write(buf[:cut]); werr != nil {
				return statusClientClosed, nil
			}
			if flush {
				_ = rc.Flush()
			}
			pending = copy(buf, buf[cut:pending])
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
			if !committed {
				writeHead(w, resp, ep, route) // an empty stream
			}
			return resp.StatusCode, nil
		case resp.Request != nil && resp.Request.Context().Err() != nil:
			// The client went away; its cancellation is not the instance's fault.
			return statusClientClosed, nil
		case !committed:
			// Nothing reached the client: the caller may retry.
			return http.StatusBadGateway, fmt.Errorf("sidecar: stream broke before its first event: %w", rerr)
		}
		// The instance broke the stream after bytes reached the client.
		return s.breakStream(w, rc, ep, rerr, sse), nil
	}
}

// breakStream ends a response whose instance broke it after bytes reached
// the client: an SSE stream gets an error event. It returns the status for
// metrics.
//
//go:noinline
func (s *Server) breakStream(w http.ResponseWriter, rc *http.ResponseController, ep *routing.Endpoint, rerr error, sse bool) int {
	ep.Load.RecordFailure()
	s.conf().Logger.Warn("upstream stream broke", "instance", ep.Instance.ID, "err", rerr)
	status, e := http.StatusBadGateway, apiError{message: "the instance broke the stream: " + rerr.Error(), typ: typeServer, code: codeUpstreamError}
	if errors.Is(rerr, errStreamIdle) {
		status, e = http.StatusGatewayTimeout, apiError{message: "the instance sent nothing for " + s.conf().StreamIdleTimeout.String(), typ: typeServer, code: codeUpstreamTimeout}
	}
	if sse {
		out := append(append([]byte("data: "), e.appendJSON(nil)...), "\n\n"...)
		_, _ = w.Write(out)
		_ = rc.Flush()
	}
	return status
}

// writeHead writes the instance's status and headers plus the sidecar's own.
func writeHead(w http.ResponseWriter, resp *http.Response, ep *routing.Endpoint, route routing.Route) {
	h := w.Header()
	copyResponseHeader(h, resp.Header)
	h[headerInstance] = ep.IDHeader
	h[headerRoute] = routeHeader(route)
	w.WriteHeader(resp.StatusCode)
}

var eventEnd = []byte("\n\n")

// parseUsage finds the last OpenAI "usage" object in b and reads its token
// counts, without decoding the rest: streams carry it in their final event
// (stream_options.include_usage), whole responses near their end. A usage
// object split across two reads is missed, which costs a metric sample,
// never a byte of the response.
func parseUsage(b []byte) (prompt, completion int64, ok bool) {
	i := bytes.LastIndex(b, []byte(`"usage":{`))
	if i < 0 {
		return 0, 0, false
	}
	u := b[i:]
	if end := bytes.IndexByte(u, '}'); end > 0 {
		u = u[:end]
	}
	prompt, okP := intField(u, `"prompt_tokens":`)
	completion, okC := intField(u, `"completion_tokens":`)
	return prompt, completion, okP || okC
}

func intField(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	j := skipSpace(b, i+len(key))
	var n int64
	start := j
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9' && j-start < 18; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > start
}

// lastEventEnd returns the index just after the last complete SSE event in
// b (an event ends with a blank line, "\n\n" or "\r\n\r\n"), or 0.
func lastEventEnd(b []byte) int {
	end := 0
	if i := bytes.LastIndex(b, []byte("\n\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.LastIndex(b, []byte("\r\n\r\n")); i >= 0 && i+4 > end {
		end = i + 4
	}
	return end
}

// isEventStream reports whether the response is an SSE stream.
func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	if len(ct) < len("text/event-stream") {
		return false
	}
	if ct[:len("text/event-stream")] == "text/event-stream" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}
