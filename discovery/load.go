package discovery

import (
	"context"
	"time"
)

// LoadReport is the load view one sidecar publishes about the instances it
// has used recently, so that every sidecar routes with a global view.
type LoadReport struct {
	SidecarID string `json:"sidecar_id"`
	// Seq increases with every publish of one sidecar process.
	Seq uint64 `json:"seq"`
	// PeriodMillis is the publisher's nominal period; readers drop a record
	// older than three periods by receive time.
	PeriodMillis int64          `json:"period_ms"`
	Instances    []InstanceLoad `json:"instances"`
}

// Period returns PeriodMillis as a duration.
func (r LoadReport) Period() time.Duration { return time.Duration(r.PeriodMillis) * time.Millisecond }

// InstanceLoad is one sidecar's load on one instance.
type InstanceLoad struct {
	ID string `json:"id"`
	// InFlight is the number of requests this sidecar has open to the instance.
	InFlight int64 `json:"inflight"`
	// TokensInFlight estimates prompt plus expected output tokens in flight.
	TokensInFlight int64 `json:"tokens_inflight,omitempty"`
	// Queued counts requests waiting in the sidecar for this instance's
	// model, per priority.
	Queued QueuedByPriority `json:"queued,omitzero"`
	// EWMA latencies in milliseconds.
	TTFTMillis float64 `json:"ewma_ttft_ms,omitempty"`
	TPOTMillis float64 `json:"ewma_tpot_ms,omitempty"`
	// ErrorRate is the recent failure fraction in [0,1].
	ErrorRate float64 `json:"error_rate,omitempty"`
	// Breaker is "closed", "half-open" or "open".
	Breaker string `json:"breaker,omitempty"`
}

// QueuedByPriority counts queued requests per priority class.
type QueuedByPriority struct {
	High   int64 `json:"high,omitempty"`
	Normal int64 `json:"normal,omitempty"`
	Low    int64 `json:"low,omitempty"`
}

// Publisher writes this sidecar's load record to the registry. Close removes
// the record (a sidecar that dies without Close loses it with its lease or
// session).
type Publisher interface {
	Publish(ctx context.Context, r LoadReport) error
	Close(ctx context.Context) error
}

// PeerLoads is the fresh set of load records of the other sidecars of a
// service, keyed by nothing: one entry per peer.
type PeerLoads []LoadReport

// LoadSource streams the peers' fresh load records whenever they change.
// Like Source, it closes the channel when ctx is done.
type LoadSource interface {
	WatchLoad(ctx context.Context) <-chan PeerLoads
}
