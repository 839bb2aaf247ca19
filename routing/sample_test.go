package routing

import (
	"fmt"
	"testing"

	"github.com/blitzscale/router/discovery"
)

// sparse returns a router over n instances of which only the listed
// indexes are routable (the rest drain).
func sparse(t *testing.T, p Picker, n int, live ...int) *Router {
	t.Helper()
	ins := make([]discovery.Instance, n)
	for i := range ins {
		ins[i] = inst(fmt.Sprintf("i%04d", i), "m")
		ins[i].Draining = true
	}
	for _, i := range live {
		ins[i].Draining = false
	}
	r := NewRouter(p)
	r.Update(snapshot(t, ins...))
	return r
}

func TestSamplingPickersFindRareCandidates(t *testing.T) {
	tests := []struct {
		policy string
		live   []int
	}{
		{"random", []int{0}},
		{"random", []int{5, 500, 999}},
		{"p2c", []int{999}},
		{"p2c", []int{3, 777}},
		{"p2c", []int{1, 2, 3, 4, 5, 600, 700, 800}},
		{"affinity", []int{42, 43}},
		{"round-robin", []int{10, 990}},
		{"least-load", []int{10, 990}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d-live", tc.policy, len(tc.live)), func(t *testing.T) {
			p, _ := NewPicker(tc.policy)
			r := sparse(t, p, 1000, tc.live...)
			eps := r.Table().Endpoints()
			seen := map[*Endpoint]int{}
			const picks = 3000
			for i := range picks {
				rq := &Request{Model: []byte("m")}
				if tc.policy == "affinity" {
					rq.AffinityKey, rq.HasAffinity = testKey(i), true
				}
				ep, _, err := r.Pick(rq)
				if err != nil {
					t.Fatal(err)
				}
				if ep.Instance.Draining {
					t.Fatalf("picked draining %s", ep.Instance.ID)
				}
				seen[ep]++
			}
			// Every candidate gets a fair part of the picks (uniform for
			// random, p2c and round-robin at equal load; affinity by ring).
			for _, i := range tc.live {
				if n := seen[eps[i]]; n < picks/len(tc.live)/3 {
					t.Errorf("%s got %d of %d picks", eps[i].Instance.ID, n, picks)
				}
			}
		})
	}
}

func TestP2CPrefersLessLoadedAmongTwoLive(t *testing.T) {
	r := sparse(t, &P2C{}, 200, 17, 150)
	eps := r.Table().Endpoints()
	eps[17].Load.Acquire()
	for range 100 {
		if ep, _, _ := r.Pick(&Request{Model: []byte("m")}); ep != eps[150] {
			t.Fatalf("picked %s; with two candidates p2c must compare both", ep.Instance.ID)
		}
	}
	eps[17].Load.Release()
}

func TestSamplingWithoutCandidates(t *testing.T) {
	for _, policy := range Policies {
		p, _ := NewPicker(policy)
		r := sparse(t, p, 50)
		rq := &Request{Model: []byte("m"), HasAffinity: true}
		if _, _, err := r.Pick(rq); err != ErrNoHealthyUpstream {
			t.Errorf("%s with every instance draining: %v", policy, err)
		}
	}
}
