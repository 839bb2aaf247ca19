package discovery

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"
)

func peerRecord(id string, periodMs int) []byte {
	return []byte(`{"sidecar_id":"` + id + `","period_ms":` + strconv.Itoa(periodMs) + `}`)
}

func peerNames(p PeerLoads) []string {
	out := []string{}
	for _, r := range p {
		out = append(out, r.SidecarID)
	}
	return out
}

// The aging rule, moved from the etcd package: receive time decides, and a
// re-read of an unchanged record does not make it fresh again.
func TestPeerViewAgesByReceiveTime(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	v := NewPeerView("me")
	v.BeginSync()
	v.Put("fast", 5, peerRecord("fast", 100), t0)
	v.Put("slow", 6, peerRecord("slow", 1000), t0)
	v.Put("me", 7, peerRecord("me", 100), t0)
	v.EndSync()
	steps := []struct {
		name string
		at   time.Duration
		do   func(now time.Time)
		want []string
	}{
		{name: "own record dropped", want: []string{"fast", "slow"}},
		{name: "at 3 periods", at: 300 * time.Millisecond, want: []string{"fast", "slow"}},
		{name: "after 3 periods of fast", at: 301 * time.Millisecond, want: []string{"slow"}},
		{name: "resync returns fast unchanged: still stale", at: 302 * time.Millisecond, do: func(now time.Time) {
			v.BeginSync()
			v.Put("fast", 5, peerRecord("fast", 100), now)
			v.Put("slow", 6, peerRecord("slow", 1000), now)
			v.EndSync()
		}, want: []string{"slow"}},
		{name: "a new revision is a new receive", at: 303 * time.Millisecond, do: func(now time.Time) {
			v.Put("fast", 9, peerRecord("fast", 100), now)
		}, want: []string{"fast", "slow"}},
		{name: "a sync without slow drops it", at: 304 * time.Millisecond, do: func(now time.Time) {
			v.BeginSync()
			v.Put("fast", 9, peerRecord("fast", 100), now)
			v.EndSync()
		}, want: []string{"fast"}},
		{name: "delete", at: 305 * time.Millisecond, do: func(time.Time) { v.Delete("fast") }, want: []string{}},
	}
	for _, st := range steps {
		now := t0.Add(st.at)
		if st.do != nil {
			st.do(now)
		}
		if got := peerNames(v.View(now)); !slices.Equal(got, st.want) {
			t.Fatalf("%s: view = %v, want %v", st.name, got, st.want)
		}
	}
}

// What each call reports decides whether a LoadSource sends a new view.
func TestPeerViewReportsChanges(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name        string
		setup       func(v *PeerView) // then View(t0) marks freshness
		act         func(v *PeerView) (bool, error)
		wantChanged bool
		wantInvalid bool
	}{
		{name: "new valid record", act: func(v *PeerView) (bool, error) { return v.Put("a", 1, peerRecord("a", 1000), t0) }, wantChanged: true},
		{name: "own record", act: func(v *PeerView) (bool, error) { return v.Put("me", 1, peerRecord("me", 1000), t0) }},
		{name: "new invalid record", act: func(v *PeerView) (bool, error) { return v.Put("a", 1, []byte("x"), t0) }, wantInvalid: true},
		{
			name:  "invalid replaces fresh",
			setup: func(v *PeerView) { v.Put("a", 1, peerRecord("a", 1000), t0) },
			act:   func(v *PeerView) (bool, error) { return v.Put("a", 2, []byte("x"), t0) }, wantChanged: true, wantInvalid: true,
		},
		{
			name:  "same revision again",
			setup: func(v *PeerView) { v.Put("a", 1, []byte("x"), t0) },
			act:   func(v *PeerView) (bool, error) { return v.Put("a", 1, []byte("x"), t0) },
		},
		{
			name:  "delete fresh",
			setup: func(v *PeerView) { v.Put("a", 1, peerRecord("a", 1000), t0) },
			act:   func(v *PeerView) (bool, error) { return v.Delete("a"), nil }, wantChanged: true,
		},
		{name: "delete unknown", act: func(v *PeerView) (bool, error) { return v.Delete("a"), nil }},
		{
			name:  "sync drops fresh",
			setup: func(v *PeerView) { v.Put("a", 1, peerRecord("a", 1000), t0) },
			act:   func(v *PeerView) (bool, error) { v.BeginSync(); return v.EndSync(), nil }, wantChanged: true,
		},
		{
			name:  "expire after 3 periods",
			setup: func(v *PeerView) { v.Put("a", 1, peerRecord("a", 1000), t0) },
			act:   func(v *PeerView) (bool, error) { return v.Expire(t0.Add(3001 * time.Millisecond)), nil }, wantChanged: true,
		},
		{
			name:  "expire within 3 periods",
			setup: func(v *PeerView) { v.Put("a", 1, peerRecord("a", 1000), t0) },
			act:   func(v *PeerView) (bool, error) { return v.Expire(t0.Add(3 * time.Second)), nil },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewPeerView("me")
			if tt.setup != nil {
				tt.setup(v)
			}
			v.View(t0)
			changed, err := tt.act(v)
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if (err != nil) != tt.wantInvalid || (err != nil && !errors.Is(err, ErrInvalidLoadReport)) {
				t.Errorf("error = %v, want invalid %v", err, tt.wantInvalid)
			}
		})
	}
}
