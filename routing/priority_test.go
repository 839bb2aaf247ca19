package routing

import (
	"strings"
	"testing"
	"time"
)

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]Priority{"": PriorityNormal, "normal": PriorityNormal, "high": PriorityHigh, "low": PriorityLow} {
		got, err := ParsePriority(in)
		if err != nil || got != want {
			t.Errorf("ParsePriority(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Error("urgent accepted")
	}
}

func TestAdmission(t *testing.T) {
	a := NewAdmission(AdmissionConfig{Low: RateLimit{Rate: 2, Burst: 2}})
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := a.Admit(PriorityLow, now); !ok {
			t.Fatalf("low request %d within burst refused", i)
		}
	}
	ok, wait := a.Admit(PriorityLow, now)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("third low request: ok=%v wait=%v, want refused with a wait of at most 1s", ok, wait)
	}
	if ok, _ := a.Admit(PriorityLow, now.Add(wait)); !ok {
		t.Error("refused after waiting the advertised time")
	}
	for range 1000 {
		if ok, _ := a.Admit(PriorityHigh, now); !ok {
			t.Fatal("unlimited high priority refused")
		}
	}
}

func TestAdmissionConfigValidateNamesFlag(t *testing.T) {
	tests := []struct {
		cfg  AdmissionConfig
		want string
	}{
		{AdmissionConfig{Low: RateLimit{Rate: -1}}, "rate-low"},
		{AdmissionConfig{High: RateLimit{Burst: -1}}, "burst-high"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if err := (AdmissionConfig{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
}
