package consul

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// BenchmarkInstancesFromEntries: the work of one health answer with 100
// instances (every answer that moved the index is transformed whole).
func BenchmarkInstancesFromEntries(b *testing.B) {
	entries := make([]*api.ServiceEntry, 100)
	for i := range entries {
		entries[i] = entry(fmt.Sprintf("gpu-%03d", i), func(e *api.ServiceEntry) {
			e.Service.Tags = []string{"model=llama-3.1-8b", "model=llama-3.1-8b:sql-lora"}
			e.Service.Meta = map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192"}
		})
	}
	b.ReportAllocs()
	for b.Loop() {
		if got, problems := instancesFromEntries(entries); len(got) != 100 || len(problems) != 0 {
			b.Fatalf("%d instances, %v", len(got), problems)
		}
	}
}

// BenchmarkLoadViewApply: one KV list answer of a fleet of n sidecars in
// which one record changed (each answer carries the whole prefix; only the
// changed record is decoded).
func BenchmarkLoadViewApply(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			pairs := make(api.KVPairs, n)
			for i := range pairs {
				r := discovery.LoadReport{SidecarID: fmt.Sprintf("s%04d", i), PeriodMillis: 2000}
				for j := range 8 {
					r.Instances = append(r.Instances, discovery.InstanceLoad{ID: fmt.Sprintf("gpu-%d", j), InFlight: 3, TTFTMillis: 120, Breaker: "closed"})
				}
				v, _ := json.Marshal(r)
				pairs[i] = &api.KVPair{Key: loadPrefix + r.SidecarID, Value: v, ModifyIndex: uint64(i + 1)}
			}
			v := newLoadView(loadPrefix, "me", time.Now, quietLogger(), &queryStats{})
			v.Apply(pairs)
			b.ReportAllocs()
			idx := uint64(n + 1)
			for b.Loop() {
				idx++
				pairs[0].ModifyIndex = idx
				v.Apply(pairs)
				v.View()
			}
		})
	}
}
