package sidecar

import (
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
)

func TestLoadPeriodRespectsFleetWriteBudget(t *testing.T) {
	p := &loadPublisher{cfg: LoadConfig{}.withDefaults()}
	tests := []struct {
		fleet int64
		want  time.Duration
	}{
		{0, 2 * time.Second},
		{1, 2 * time.Second},
		{200, 2 * time.Second},
		{500, 5 * time.Second},
		{1000, 10 * time.Second},
	}
	for _, tc := range tests {
		if got := p.period(tc.fleet); got != tc.want {
			t.Errorf("period(%d sidecars) = %v, want %v (≤ 100 writes/s fleet-wide)", tc.fleet, got, tc.want)
		}
	}
}

func TestLoadRecordSkipsSmallMoves(t *testing.T) {
	p := &loadPublisher{cfg: LoadConfig{}.withDefaults(), last: map[string]discovery.InstanceLoad{
		"a": {ID: "a", InFlight: 10, Breaker: "closed"},
		"b": {ID: "b", InFlight: 0, Breaker: "closed"},
	}}
	tests := []struct {
		il   discovery.InstanceLoad
		want bool
	}{
		{discovery.InstanceLoad{ID: "a", InFlight: 11, Breaker: "closed"}, false}, // 1 < max(2, 10/5)
		{discovery.InstanceLoad{ID: "a", InFlight: 12, Breaker: "closed"}, true},
		{discovery.InstanceLoad{ID: "a", InFlight: 8, Breaker: "closed"}, true},
		{discovery.InstanceLoad{ID: "b", InFlight: 1, Breaker: "closed"}, false},
		{discovery.InstanceLoad{ID: "b", InFlight: 0, Breaker: "open"}, true},
		{discovery.InstanceLoad{ID: "new", InFlight: 0, Breaker: "closed"}, true},
	}
	for _, tc := range tests {
		if got := p.moved(tc.il); got != tc.want {
			t.Errorf("moved(%+v) = %v, want %v", tc.il, got, tc.want)
		}
	}
}

func TestLoadConfigValidateNamesFlag(t *testing.T) {
	for cfg, flag := range map[LoadConfig]string{
		{Period: -time.Second}: "load-period",
		{Jitter: 1.5}:          "load-jitter",
		{FleetWriteBudget: -1}: "fleet-write-budget",
		{MinChange: -3}:        "load-min-change",
	} {
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", cfg, err, flag)
		}
	}
}

func TestApplyPeersSumsOtherSidecars(t *testing.T) {
	s := newServer(t, Config{SidecarID: "me"})
	apply(t, s, discovery.Instance{ID: "a", Address: "127.0.0.1:1", Models: []string{"m"}})
	s.applyPeers(discovery.PeerLoads{
		{SidecarID: "p1", PeriodMillis: 1000, Instances: []discovery.InstanceLoad{{ID: "a", InFlight: 3}}},
		{SidecarID: "p2", PeriodMillis: 1000, Instances: []discovery.InstanceLoad{{ID: "a", InFlight: 4}, {ID: "gone", InFlight: 9}}},
		{SidecarID: "me", PeriodMillis: 1000, Instances: []discovery.InstanceLoad{{ID: "a", InFlight: 100}}},
	})
	ep := s.Router().Table().Endpoints()[0]
	if got := ep.Load.PeerInFlight(); got != 7 {
		t.Errorf("peer in-flight = %d, want 7 (own record ignored)", got)
	}
	if got := s.fleetSize.Load(); got != 4 {
		t.Errorf("fleet size = %d, want peers + 1 = 4", got)
	}
	// A table swap keeps applying the peers' view.
	apply(t, s, discovery.Instance{ID: "a", Address: "127.0.0.1:1", Models: []string{"m"}},
		discovery.Instance{ID: "gone", Address: "127.0.0.1:2", Models: []string{"m"}})
	if got := s.Router().Table().Endpoint("gone").Load.PeerInFlight(); got != 9 {
		t.Errorf("new instance peer in-flight = %d, want 9", got)
	}
}
