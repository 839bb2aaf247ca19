package routing

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesFlag(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // "" for valid
	}{
		{Config{}, ""},
		{Config{AffinityLoadFactor: 1, MaxInflightPerInstance: -1, QueueMax: 1, QueueWaitLow: time.Millisecond}, ""},
		{Config{AffinityLoadFactor: 0.9}, "affinity-load-factor"},
		{Config{AffinityLoadFactor: math.NaN()}, "affinity-load-factor"},
		{Config{AffinityLoadFactor: math.Inf(1)}, "affinity-load-factor"},
		{Config{MaxInflightPerInstance: -2}, "max-inflight-per-instance"},
		{Config{QueueMax: -1}, "queue-max"},
		{Config{QueueWaitHigh: -1}, "queue-wait-high"},
		{Config{QueueWaitNormal: -1}, "queue-wait-normal"},
		{Config{QueueWaitLow: -1}, "queue-wait-low"},
		{Config{EngineStaleAfter: -1}, "engine-stale-after"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want nil", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
		if _, nerr := New(tc.cfg, &P2C{}); (nerr == nil) != (err == nil) {
			t.Errorf("New(%+v) = %v, but Validate = %v", tc.cfg, nerr, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	got := NewRouter(&P2C{}).Config()
	want := Config{
		AffinityLoadFactor:     1.25,
		MaxInflightPerInstance: 256,
		QueueMax:               1024,
		QueueWaitHigh:          30 * time.Second,
		QueueWaitNormal:        10 * time.Second,
		QueueWaitLow:           5 * time.Second,
		EngineStaleAfter:       5 * time.Second,
	}
	if got != want {
		t.Errorf("defaults = %+v, want %+v", got, want)
	}
	if w := got.maxWait(PriorityLow); w != 5*time.Second {
		t.Errorf("low max wait %v", w)
	}
}
