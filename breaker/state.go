package breaker

import (
	"strconv"

	"github.com/sony/gobreaker/v2"
)

// State is a breaker's state. The values are those of the
// blitz_breaker_state metric.
type State int

// States of a breaker.
const (
	// Closed admits every request and counts outcomes.
	Closed State = 0
	// HalfOpen admits one trial at a time; its success closes the breaker,
	// its failure reopens it.
	HalfOpen State = 1
	// Open rejects every request until CoolDown has passed.
	Open State = 2
)

// String returns "closed", "half-open" or "open", the spelling of
// discovery.InstanceLoad.Breaker.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// fromGobreaker maps gobreaker's states onto ours by name rather than by
// relying on the two enums keeping the same order.
func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// Outcome is how a request admitted by Allow ended, as far as the instance's
// health is concerned.
type Outcome int

// Outcomes reported through Done.
const (
	// Success: the instance answered (2xx/3xx, or a 4xx that is the
	// client's fault) and the response or stream completed.
	Success Outcome = iota
	// Failure: connect error, connection reset, timeout, 5xx other than 503,
	// or a stream the engine broke.
	Failure
	// Overload: 429 or 503 from the engine. It counts as a failure; it is a
	// separate value so that callers can say what happened and so that the
	// two can be told apart later without changing callers.
	Overload
	// Ignored: the client cancelled, or a 4xx other than 429. It counts
	// neither as a failure nor as a success, so it neither trips the breaker
	// nor dilutes the failure ratio, and it frees a half-open trial slot.
	Ignored
)

// String names the outcome for logs.
func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Failure:
		return "failure"
	case Overload:
		return "overload"
	case Ignored:
		return "ignored"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// err turns the outcome into the value gobreaker's IsSuccessful and
// IsExcluded judge. An out-of-range Outcome is a caller bug; it counts as a
// failure so that it shows up as a breaker opening rather than as a silently
// healthy instance.
func (o Outcome) err() error {
	switch o {
	case Success:
		return nil
	case Overload:
		return errOverload
	case Ignored:
		return errIgnored
	}
	return errFailure
}
