package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// DecodeLoadReport parses the load record stored under load/<sidecarID>.
// Unknown fields are ignored (newer publishers may add some). The record
// must name the same sidecar as its key and pass ValidateLoadReport, or
// readers could not age it. Errors wrap ErrInvalidLoadReport.
func DecodeLoadReport(sidecarID string, value []byte) (LoadReport, error) {
	var r LoadReport
	dec := json.NewDecoder(bytes.NewReader(value))
	if err := dec.Decode(&r); err != nil {
		return LoadReport{}, fmt.Errorf("%w: %v", ErrInvalidLoadReport, err)
	}
	// More() would miss a stray "}" or "]"; only EOF means nothing follows.
	if _, err := dec.Token(); err != io.EOF {
		return LoadReport{}, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidLoadReport)
	}
	if r.SidecarID != sidecarID {
		return LoadReport{}, fmt.Errorf("%w: sidecar_id %q differs from its key's last segment %q", ErrInvalidLoadReport, r.SidecarID, sidecarID)
	}
	if err := ValidateLoadReport(r); err != nil {
		return LoadReport{}, err
	}
	return r, nil
}

// ValidateLoadReport checks what readers rely on: a period to age the record
// by, and instance ids with non-negative counters (a negative count would
// lower every peer's view of an instance's global load). Errors wrap
// ErrInvalidLoadReport.
func ValidateLoadReport(r LoadReport) error {
	if r.PeriodMillis <= 0 {
		return fmt.Errorf("%w %q: period_ms %d: must be positive", ErrInvalidLoadReport, r.SidecarID, r.PeriodMillis)
	}
	for i, in := range r.Instances {
		switch {
		case in.ID == "":
			return fmt.Errorf("%w %q: instances[%d].id: required", ErrInvalidLoadReport, r.SidecarID, i)
		case in.InFlight < 0 || in.TokensInFlight < 0 || in.Queued.High < 0 || in.Queued.Normal < 0 || in.Queued.Low < 0:
			return fmt.Errorf("%w %q: instances[%d] (%q): counters must not be negative", ErrInvalidLoadReport, r.SidecarID, i, in.ID)
		}
	}
	return nil
}

// EncodeLoadReport is what a Publisher writes for sidecarID: r with its
// SidecarID filled in when empty, validated, as JSON. A record naming
// another sidecar is rejected rather than rewritten, because it would land
// under the wrong key. Errors wrap ErrInvalidLoadReport, except a JSON
// encoding failure (a NaN latency), which is wrapped as is.
func EncodeLoadReport(sidecarID string, r LoadReport) ([]byte, error) {
	if r.SidecarID == "" {
		r.SidecarID = sidecarID
	}
	if r.SidecarID != sidecarID {
		return nil, fmt.Errorf("%w: sidecar_id %q: this publisher writes %q", ErrInvalidLoadReport, r.SidecarID, sidecarID)
	}
	if err := ValidateLoadReport(r); err != nil {
		return nil, err
	}
	value, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("discovery: encode load record: %w", err)
	}
	return value, nil
}
