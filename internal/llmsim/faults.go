package llmsim

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"time"
)

// maxSlowFactor bounds SlowFactor so that scaled durations cannot overflow.
const maxSlowFactor = 1000

// Faults are injected failures. The zero value injects nothing. The JSON
// names are the body of POST /sim/faults.
type Faults struct {
	// ErrorRatio is the fraction (0..1) of inference requests answered with
	// 500 and an OpenAI error, decided by the seeded random source.
	ErrorRatio float64 `json:"error_ratio"`
	// Hang makes inference requests go unanswered, without even headers,
	// until the client goes away; they then count as cancelled.
	Hang bool `json:"hang"`
	// SlowFactor multiplies TTFT and ITL; 0 or 1 means normal speed.
	SlowFactor float64 `json:"slow_factor"`
	// Unhealthy makes GET /health answer 503; inference still works, as on
	// an engine whose health check fails while it drains.
	Unhealthy bool `json:"unhealthy"`
	// FailMidStream, when > 0, aborts the connection of a streaming response
	// right after that many SSE data events, without [DONE], as a crashing
	// engine would. Streams shorter than that and non-streaming responses are
	// unaffected.
	FailMidStream int `json:"fail_mid_stream"`
}

// Validate reports every out-of-range field, joined, each as a *FieldError
// that wraps ErrInvalidFaults.
func (f Faults) Validate() error {
	var errs []error
	bad := func(field, reason string) {
		errs = append(errs, &FieldError{Field: field, Reason: reason, kind: ErrInvalidFaults})
	}
	if !(f.ErrorRatio >= 0 && f.ErrorRatio <= 1) { // also rejects NaN
		bad("error_ratio", "must be between 0 and 1")
	}
	if !(f.SlowFactor >= 0 && f.SlowFactor <= maxSlowFactor) {
		bad("slow_factor", "must be between 0 and 1000")
	}
	if f.FailMidStream < 0 {
		bad("fail_mid_stream", "must be >= 0")
	}
	return errors.Join(errs...)
}

// scale multiplies d by the slow factor; a factor outside (0, 1000] —
// which Validate rejects — counts as 1 so that SetFaults with an unchecked
// value never overflows a duration.
func (f Faults) scale(d time.Duration) time.Duration {
	k := f.SlowFactor
	if !(k > 0 && k <= maxSlowFactor) {
		return d
	}
	return time.Duration(math.Round(float64(d) * k))
}

// SetFaults replaces the injected faults; requests already admitted keep the
// faults they started with. It does not validate: call Faults.Validate first
// (POST /sim/faults does). An error ratio above 1 then behaves as 1.
func (s *Sim) SetFaults(f Faults) { s.faults.Store(&f) }

// Faults returns the injected faults.
func (s *Sim) Faults() Faults { return *s.faults.Load() }

// maxFaultsBody bounds POST /sim/faults bodies; a Faults value is tiny.
const maxFaultsBody = 64 << 10

// handleGetFaults answers GET /sim/faults with the current faults.
func (s *Sim) handleGetFaults(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Faults())
}

// handleSetFaults answers POST /sim/faults. The body replaces all faults
// (absent fields are zero). Unknown fields are rejected so that a typo in a
// chaos script fails loudly instead of injecting nothing.
func (s *Sim) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFaultsBody))
	dec.DisallowUnknownFields()
	var f Faults
	if err := dec.Decode(&f); err != nil {
		badRequest("", "invalid faults JSON: "+err.Error()).write(w)
		return
	}
	if err := f.Validate(); err != nil {
		var fe *FieldError
		param := ""
		if errors.As(err, &fe) {
			param = fe.Field
		}
		badRequest(param, err.Error()).write(w)
		return
	}
	s.SetFaults(f)
	writeJSON(w, http.StatusOK, f)
}

// handleStats answers GET /sim/stats.
func (s *Sim) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// handleHealth answers GET /health: 200 with an empty body, as vLLM does,
// or 503 while the Unhealthy fault is set.
func (s *Sim) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if s.Faults().Unhealthy {
		errAPIHealth.write(w)
		return
	}
	w.WriteHeader(http.StatusOK)
}
