package sidecar

import (
	"net/http"

	"github.com/blitzscale/router/breaker"
	"github.com/blitzscale/router/routing"
)

// onBreakerChange mirrors a breaker transition into the routing counters
// (so the pick path reads one atomic) and into metrics and logs.
func (s *Server) onBreakerChange(id string, from, to breaker.State) {
	if t := s.router.Table(); t != nil {
		if ep := t.Endpoint(id); ep != nil {
			ep.Load.SetBreaker(routing.BreakerState(to))
		}
	}
	s.metrics.breakerTransitions.WithLabelValues(to.String()).Inc()
	s.conf().Logger.Info("breaker changed state", "instance", id, "from", from.String(), "to", to.String())
}

// outcome classifies a finished attempt for the breaker: the instance's
// fault (failure, overload) or not (success, or ignored when the client
// went away or the request itself was refused).
func outcome(code int) breaker.Outcome {
	switch {
	case code == statusClientClosed:
		return breaker.Ignored
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		return breaker.Overload
	case code >= 500:
		return breaker.Failure
	case code >= 400:
		return breaker.Ignored
	}
	return breaker.Success
}
