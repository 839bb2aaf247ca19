package routing

import (
	"context"
	"fmt"
	"testing"

	"github.com/blitzscale/router/discovery"
)

// BenchmarkPick measures one pick per policy and instance count. Sampling
// policies (random, p2c, affinity, auto) must stay flat in n and allocate
// nothing; round-robin and least-load scan.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		snap := benchSnapshot(b, n)
		for _, policy := range Policies {
			for _, keyed := range []bool{false, true} {
				if keyed && policy != "auto" && policy != "affinity" {
					continue
				}
				name := fmt.Sprintf("%s/n=%d", policy, n)
				if keyed {
					name = fmt.Sprintf("%s-key/n=%d", policy, n)
				}
				b.Run(name, func(b *testing.B) {
					p, _ := NewPicker(policy)
					r := NewRouter(p)
					r.Update(snap)
					req := &Request{}
					model := []byte("m")
					key := uint64(0)
					b.ReportAllocs()
					for b.Loop() {
						req.Reset()
						req.Model = model
						if keyed {
							key += 0x9e3779b97f4a7c15
							req.AffinityKey, req.HasAffinity = key, true
						}
						if _, _, err := r.Pick(req); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkAcquireRelease is the sidecar's per-request routing cost: pick,
// count against the cap, release.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, n := range []int{10, 1000} {
		for _, policy := range []string{"p2c", "affinity"} {
			b.Run(fmt.Sprintf("%s/n=%d", policy, n), func(b *testing.B) {
				p, _ := NewPicker(policy)
				r := NewRouter(p)
				r.Update(benchSnapshot(b, n))
				ctx := context.Background()
				model := []byte("m")
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					req := &Request{}
					key := uint64(0)
					for pb.Next() {
						req.Reset()
						req.Model = model
						key += 0x9e3779b97f4a7c15
						req.AffinityKey, req.HasAffinity = key, true
						ep, _, err := r.Acquire(ctx, req)
						if err != nil {
							b.Fatal(err)
						}
						r.Release(ep)
					}
				})
			})
		}
	}
}

func benchSnapshot(b *testing.B, n int) discovery.Snapshot {
	ins := make([]discovery.Instance, n)
	for i := range ins {
		ins[i] = inst(fmt.Sprintf("gpu-%04d", i), "m")
	}
	return snapshot(b, ins...)
}

// BenchmarkUpdate is the cost of taking a snapshot, never paid per
// request: "changed" builds and swaps a new table (per registry change),
// "confirmed" is a registry re-sending the same view (about every 30 s),
// which keeps the table and only compares.
func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		snap := benchSnapshot(b, n)
		changed := benchSnapshot(b, n)
		changed.Instances[n/2].Draining = true
		b.Run(fmt.Sprintf("changed/n=%d", n), func(b *testing.B) {
			p, _ := NewPicker("auto")
			r := NewRouter(p)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i++; i%2 == 0 {
					r.Update(snap)
				} else {
					r.Update(changed)
				}
			}
		})
		b.Run(fmt.Sprintf("confirmed/n=%d", n), func(b *testing.B) {
			p, _ := NewPicker("auto")
			r := NewRouter(p)
			r.Update(snap)
			b.ReportAllocs()
			for b.Loop() {
				r.Update(snap)
			}
		})
	}
}
