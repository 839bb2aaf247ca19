package sidecar

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/routing"
)

// Request and response headers of the sidecar's contract.
const (
	headerPriority = "X-Blitz-Priority"
	headerSession  = "X-Blitz-Session"
	headerInstance = "X-Blitz-Instance"
	headerRoute    = "X-Blitz-Route"
)

// routeHeaders are ready-made header values, so setting X-Blitz-Route does
// not allocate.
var routeHeaders = map[routing.Route][]string{}

func routeHeader(r routing.Route) []string {
	if v, ok := routeHeaders[r]; ok {
		return v
	}
	return []string{string(r)}
}

func init() {
	for _, r := range routing.Routes {
		routeHeaders[r] = []string{string(r)}
	}
}

var emptyUserAgent = []string{""}

// maxUpstreamAttempts mirrors the router's bound (first try + retries).
const maxUpstreamAttempts = maxRetriesLimit + 1

// proxy serves every POST /v1/...: read the body once, find the model, admit,
// pick, forward, and retry on another instance while nothing has reached
// the client.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	rt := s.rt.Load() // one configuration for the whole request, even across a reload
	ex := s.exchanges.Get().(*exchange)
	ex.acquire()
	defer ex.release()

	prio, ok := s.admit(w, r, ex, rt, start)
	if !ok {
		return
	}
	req := &ex.req
	model := req.Model
	s.setAffinity(req, r, &ex.fields)
	ep, route, err := s.router.Acquire(r.Context(), req)
	if err != nil {
		s.reject(w, s.pickError(err, model, prio), req.ModelName, prio, start)
		return
	}
	removeHopHeaders(r.Header)
	switch {
	case rt.upstreamAuth != nil:
		r.Header["Authorization"] = rt.upstreamAuth
	case rt.cfg.AuthToken != "":
		delete(r.Header, "Authorization") // the sidecar's own token stays here
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = emptyUserAgent // keep Go's default out
	}

	rt.retries.onRequest()
	// ep is counted in flight (Acquire) from here until Release.
	for tries, rejected := 0, 0; ; {
		done, berr := s.breakers.Allow(ep.Instance.ID)
		if berr != nil {
			// The breaker opened (or its trial is taken) since the pick: not
			// a failure of this request, so it costs no retry.
			s.router.Release(ep)
			req.Exclude(ep)
			rejected++
			if rejected > maxUpstreamAttempts {
				err = routing.ErrNoHealthyUpstream
			} else {
				ep, route, err = s.router.Acquire(r.Context(), req)
			}
			if err != nil {
				s.reject(w, s.pickError(err, model, prio), req.ModelName, prio, start)
				return
			}
			continue
		}
		tries++
		sent := s.now()
		s.metrics.overhead.Observe(sent.Sub(start).Seconds())
		resp, err := s.roundTrip(ex, r, ep)
		if err == nil && !retryableStatus(resp.StatusCode) {
			code, rerr := s.relay(w, resp, ex, ep, route, sent)
			if rerr == nil {
				s.router.Release(ep)
				done(outcome(code))
				s.metrics.done(req.ModelName, ep.Instance.ID, prio, code, s.now().Sub(start))
				return
			}
			// A stream that broke before its first event reached the
			// client: retried like a reset before the headers.
			resp, err = nil, rerr
		}
		// Failed before any byte reached the client.
		s.router.Release(ep)
		if r.Context().Err() != nil {
			if resp != nil {
				resp.Body.Close()
			}
			done(breaker.Ignored)
			s.metrics.done(req.ModelName, ep.Instance.ID, prio, statusClientClosed, s.now().Sub(start))
			return
		}
		ep.Load.RecordFailure()
		if resp != nil {
			done(outcome(resp.StatusCode))
		} else {
			done(breaker.Failure)
		}
		reason := failureReason(resp, err)
		req.Exclude(ep)
		if tries <= s.conf().MaxRetries {
			if !rt.retries.withdraw(s.now()) {
				s.metrics.retries.WithLabelValues("budget_exhausted").Inc()
			} else if next, _, aerr := s.router.Acquire(r.Context(), req); aerr == nil {
				if resp != nil {
					drainAndClose(resp.Body)
				}
				s.noteRetry(ep, next, reason)
				ep, route = next, routing.RouteRetry
				continue
			}
		}
		if resp != nil {
			// The engine's own answer is the most useful error we have.
			code, rerr := s.relay(w, resp, ex, ep, route, sent)
			if rerr == nil {
				s.metrics.done(req.ModelName, ep.Instance.ID, prio, code, s.now().Sub(start))
				return
			}
			err = rerr
		}
		s.failUpstream(w, err, ep, req.ModelName, prio, start)
		return
	}
}

// noteRetry counts and logs a retry. The cold paths of proxy and relay are
// functions of their own, not inlined, to keep the frames small that stay
// on the stack for a stream's life.
//
//go:noinline
func (s *Server) noteRetry(from, to *routing.Endpoint, reason string) {
	s.metrics.retries.WithLabelValues(reason).Inc()
	s.conf().Logger.Debug("retrying on another instance", "instance", from.Instance.ID, "next", to.Instance.ID, "reason", reason)
}

// failUpstream answers a request whose every attempt failed before its
// first byte.
//
//go:noinline
func (s *Server) failUpstream(w http.ResponseWriter, err error, ep *routing.Endpoint, model string, prio routing.Priority, start time.Time) {
	s.conf().Logger.Warn("upstream failed", "instance", ep.Instance.ID, "model", model, "err", err)
	s.reject(w, upstreamFailure(err), model, prio, start)
}

// admit reads and checks the request and applies the priority's token
// bucket; on failure it has answered the client. It is a function of its
// own so that its locals are off the stack while a response streams: the
// handler's goroutine keeps the stack it reached for the stream's life.
//
//go:noinline
func (s *Server) admit(w http.ResponseWriter, r *http.Request, ex *exchange, rt *runtime, start time.Time) (routing.Priority, bool) {
	if e, ok := s.readBody(ex, w, r); !ok {
		s.reject(w, e, "", routing.PriorityNormal, start)
		return 0, false
	}
	if scanBody(ex.body, &ex.fields) != nil {
		s.reject(w, errInvalid("request body must be a JSON object", ""), "", routing.PriorityNormal, start)
		return 0, false
	}
	model, ok := stringValue(ex.fields.model)
	if !ok || len(model) == 0 {
		s.reject(w, errInvalid("you must provide a model parameter", "model"), "", routing.PriorityNormal, start)
		return 0, false
	}
	prio, err := routing.ParsePriority(r.Header.Get(headerPriority))
	if err != nil {
		s.reject(w, errInvalid("X-Blitz-Priority must be high, normal or low", headerPriority), "", routing.PriorityNormal, start)
		return 0, false
	}
	ex.req.Model = model
	ex.req.Priority = prio
	if ok, wait := rt.admission.Admit(prio, start); !ok {
		s.metrics.shed(prio, "rate_limit")
		s.reject(w, apiError{status: http.StatusTooManyRequests, message: "rate limit for priority " + prio.String() + " exceeded; retry later", typ: typeRateLimit, code: codeRateLimit, retryAfter: wait}, "", prio, start)
		return 0, false
	}
	return prio, true
}

// roundTrip sends one attempt of the request to ep: a copy of the inbound
// request in the exchange's pooled upstream request (its context carries the
// client's cancellation) with the URL, host and body changed, bounded by its
// model's first-byte timeout.
func (s *Server) roundTrip(ex *exchange, r *http.Request, ep *routing.Endpoint) (*http.Response, error) {
	out := &ex.out
	*out = *r
	ex.outURL = *r.URL
	ex.outURL.Scheme, ex.outURL.Host = "http", ep.Instance.Address
	out.URL = &ex.outURL
	out.Host = ep.Instance.Address
	out.RequestURI = ""
	out.Body = ex.upstreamBody()
	out.ContentLength = int64(len(ex.body))
	out.GetBody = ex.getBody
	out.Close = false
	rt := s.rt.Load()
	return rt.transport.RoundTripTimeout(out, rt.cfg.firstByteTimeout(ex.req.ModelName))
}

// readBody reads the request body once into the exchange's pooled buffer,
// bounded by MaxBodyBytes.
func (s *Server) readBody(ex *exchange, w http.ResponseWriter, r *http.Request) (apiError, bool) {
	limit := s.conf().MaxBodyBytes
	// A client that trickles its body (slowloris) meets a deadline.
	rc := http.NewResponseController(w)
	timedOut := false
	if rc.SetReadDeadline(s.now().Add(s.conf().BodyReadTimeout)) == nil {
		defer func() {
			if !timedOut {
				_ = rc.SetReadDeadline(time.Time{})
			}
		}()
	}
	tooLarge := apiError{status: http.StatusRequestEntityTooLarge, message: "request body exceeds " + strconv.FormatInt(limit, 10) + " bytes", typ: typeInvalidRequest, code: codeTooLarge}
	if r.ContentLength > limit {
		return tooLarge, false
	}
	buf := ex.body[:0]
	if r.ContentLength > 0 {
		buf = slices.Grow(buf, int(r.ContentLength)+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, max(512, cap(buf)))
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		ex.body = buf
		if int64(len(buf)) > limit {
			return tooLarge, false
		}
		if err == io.EOF {
			return apiError{}, true
		}
		if err != nil {
			if isTimeout(err) {
				// Close rather than let net/http wait for the rest of the
				// body before it reuses the connection.
				timedOut = true
				w.Header().Set("Connection", "close")
				return apiError{status: http.StatusRequestTimeout, message: "the request body did not arrive within " + s.conf().BodyReadTimeout.String(), typ: typeInvalidRequest, code: "request_timeout"}, false
			}
			return errInvalid("reading the request body failed", ""), false
		}
	}
}

// pickError maps a routing error to the contract's answer; a shed request
// is counted under its own priority.
func (s *Server) pickError(err error, model []byte, prio routing.Priority) apiError {
	switch {
	case errors.Is(err, routing.ErrModelNotFound):
		return apiError{status: http.StatusNotFound, message: "the model '" + string(model) + "' is not served by any instance", typ: typeInvalidRequest, param: "model", code: codeModelNotFound}
	case errors.Is(err, routing.ErrQueueFull), errors.Is(err, routing.ErrQueueTimeout):
		reason, msg := "queue_full", "the queue for '"+string(model)+"' is full"
		if errors.Is(err, routing.ErrQueueTimeout) {
			reason, msg = "queue_timeout", "no instance for '"+string(model)+"' freed up within the "+prio.String()+"-priority wait"
		}
		s.metrics.shed(prio, reason)
		return apiError{status: http.StatusTooManyRequests, message: msg, typ: typeRateLimit, code: codeRateLimit, retryAfter: time.Second}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apiError{status: statusClientClosed, message: "the client went away", typ: typeInvalidRequest, code: "client_closed"}
	case errors.Is(err, routing.ErrNoTable):
		return apiError{status: http.StatusServiceUnavailable, message: "discovery has not completed its first sync", typ: typeServer, code: codeNoHealthyUpstream, retryAfter: time.Second}
	default:
		s.metrics.shed(prio, "no_healthy_upstream")
		return apiError{status: http.StatusServiceUnavailable, message: "every instance serving '" + string(model) + "' is draining, open-circuited or saturated", typ: typeServer, code: codeNoHealthyUpstream, retryAfter: time.Second}
	}
}

// reject writes e and counts it.
func (s *Server) reject(w http.ResponseWriter, e apiError, model string, prio routing.Priority, start time.Time) {
	writeError(w, e)
	s.metrics.done(model, "", prio, e.status, s.now().Sub(start))
}

// retryableStatus: the engine failed or cannot take the request now (500
// engine error, 502/504 from a proxy in front of it, 503/429 overload), so
// another instance may serve it. 501 and 4xx other than 429 are answers
// about the request itself and are relayed.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, http.StatusTooManyRequests:
		return true
	}
	return false
}

func failureReason(resp *http.Response, err error) string {
	switch {
	case resp != nil:
		return "status_" + strconv.Itoa(resp.StatusCode)
	case isTimeout(err):
		return "timeout"
	case isDialError(err):
		return "connect"
	}
	return "transport"
}

func upstreamFailure(err error) apiError {
	if isTimeout(err) {
		return apiError{status: http.StatusGatewayTimeout, message: "the instance did not answer in time", typ: typeServer, code: codeUpstreamTimeout}
	}
	return apiError{status: http.StatusBadGateway, message: "the instance failed before answering", typ: typeServer, code: codeUpstreamError}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errStreamIdle) || (errors.As(err, &ne) && ne.Timeout())
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// drainAndClose reads a little of an abandoned body so the connection can be
// reused, then closes it.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}
