package breaker

import "errors"

// Sentinels of this package, inspected with errors.Is.
var (
	// ErrOpen rejects a request because the instance's breaker is open: it
	// failed recently and its cool-down has not passed. Nothing was sent, so
	// the caller may try another instance.
	ErrOpen = errors.New("breaker: open")
	// ErrHalfOpenBusy rejects a request because the instance's breaker is
	// half-open and its single trial (a probe or a real request) is in
	// flight. Nothing was sent.
	ErrHalfOpenBusy = errors.New("breaker: half-open trial in flight")
	// ErrInvalidConfig marks a Config that Validate rejects.
	ErrInvalidConfig = errors.New("breaker: invalid config")
)

// Outcomes as gobreaker sees them: Done turns an Outcome into one of these
// preallocated errors so the hot path allocates nothing for it. They never
// leave the package.
var (
	errFailure  = errors.New("breaker: failure")
	errOverload = errors.New("breaker: overload")
	errIgnored  = errors.New("breaker: ignored")
)
