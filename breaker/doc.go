// Package breaker owns one circuit breaker per inference instance and the
// active prober that brings a recovered instance back before any real request
// is risked on it.
//
// It wraps github.com/sony/gobreaker/v2 in its two-step form: the proxy asks
// Allow before sending and reports an Outcome through the returned Done when
// the response or stream ends, which fits SSE streams that last far longer
// than a request/response call. A breaker trips on consecutive failures or on
// a failure ratio over a minimum volume within a rolling window, stays open for
// a cool-down, then admits a single half-open trial. Client cancellations and
// 4xx other than 429 are Ignored: they count neither as failures nor as
// successes.
//
// It knows discovery.Instance (an id and an address to probe) and nothing
// else of the router. It must not import routing or sidecar: those consume
// it. State changes leave the package only through Config.OnStateChange,
// which the sidecar uses to mirror states into routing's atomics and metrics.
package breaker
