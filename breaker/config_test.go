package breaker

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" means valid
	}{
		{"zero is all defaults", Config{}, ""},
		{"explicit values", Config{ConsecutiveFailures: 3, FailureRatio: 1, MinRequests: 1, Window: MinWindow, CoolDown: time.Millisecond, ProbePath: "/v1/models", ProbeInterval: time.Millisecond, ProbeTimeout: time.Millisecond}, ""},
		{"ratio above one", Config{FailureRatio: 1.5}, "failure-ratio"},
		{"ratio negative", Config{FailureRatio: -0.1}, "failure-ratio"},
		{"ratio NaN", Config{FailureRatio: math.NaN()}, "failure-ratio"},
		{"ratio Inf", Config{FailureRatio: math.Inf(1)}, "failure-ratio"},
		{"window negative", Config{Window: -time.Second}, "window"},
		{"window too small", Config{Window: time.Millisecond}, "window"},
		{"cool-down negative", Config{CoolDown: -1}, "cool-down"},
		{"probe path relative", Config{ProbePath: "health"}, "probe-path"},
		{"probe interval negative", Config{ProbeInterval: -1}, "probe-interval"},
		{"probe timeout negative", Config{ProbeTimeout: -1}, "probe-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), "breaker: ") || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Validate() = %q, want it to name %q", err, tt.field)
			}
			if _, nerr := NewSet(tt.cfg); !errors.Is(nerr, ErrInvalidConfig) {
				t.Errorf("NewSet() error = %v, want ErrInvalidConfig", nerr)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for s, want := range map[State]string{Closed: "closed", HalfOpen: "half-open", Open: "open", 7: "state(7)"} {
		if s.String() != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), s.String(), want)
		}
	}
	// The metric blitz_breaker_state exports these numbers.
	if Closed != 0 || HalfOpen != 1 || Open != 2 {
		t.Errorf("state values changed: %d %d %d", Closed, HalfOpen, Open)
	}
}
