package etcd

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
)

// BenchmarkConvergence measures, per trial, the time from an instance Put
// to the Source sending a snapshot that holds it, and from its Delete to a
// snapshot without it, against an embedded etcd on loopback. It reports
// p50/p99 in milliseconds; ns/op is one put-and-delete round. Run with
// e.g. -benchtime=500x for stable percentiles.
func BenchmarkConvergence(b *testing.B) {
	srv := startServer(b, "", "")
	c := newClient(b, srv.Endpoints())
	// A realistic background: 50 registered instances.
	for i := range 50 {
		putInstance(b, c, inst(fmt.Sprintf("bg-%02d", i)))
	}
	_, ch, stop := watchSourceStop(b, testConfig(c, nil))
	defer stop()
	recvUntil(b, ch, "initial", func(s discovery.Snapshot) bool { return len(s.Instances) == 50 })

	has := func(id string) func(discovery.Snapshot) bool {
		return func(s discovery.Snapshot) bool {
			return slices.ContainsFunc(s.Instances, func(in discovery.Instance) bool { return in.ID == id })
		}
	}
	puts := make([]time.Duration, 0, b.N)
	dels := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("trial-%d", i)
		t0 := time.Now()
		putInstance(b, c, inst(id))
		recvUntil(b, ch, "put seen", has(id))
		puts = append(puts, time.Since(t0))

		t0 = time.Now()
		if _, err := c.Delete(ctx, instPrefix+id); err != nil {
			b.Fatal(err)
		}
		recvUntil(b, ch, "delete seen", func(s discovery.Snapshot) bool { return !has(id)(s) })
		dels = append(dels, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(percentileMs(puts, 50), "put-p50-ms")
	b.ReportMetric(percentileMs(puts, 99), "put-p99-ms")
	b.ReportMetric(percentileMs(dels, 50), "delete-p50-ms")
	b.ReportMetric(percentileMs(dels, 99), "delete-p99-ms")
}

// BenchmarkLoadViewApply measures one sidecar's cost to take in one peer's
// record and rebuild the peers' view, with n peers known: the per-event CPU
// that every sidecar pays for every write in the fleet.
func BenchmarkLoadViewApply(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			v := newLoadView("me", time.Now, quietLogger(), &watchStats{})
			values := make([][]byte, n)
			full := batch{full: true}
			for i := range n {
				values[i] = []byte(sampleRecord(fmt.Sprintf("side-%04d", i), 1))
				full.events = append(full.events, kvEvent{name: fmt.Sprintf("side-%04d", i), value: values[i], modRev: int64(i + 1)})
			}
			v.Apply(full)
			v.View()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				name := fmt.Sprintf("side-%04d", i%n)
				ev := kvEvent{name: name, value: values[i%n], modRev: int64(n + i + 1)}
				if v.Apply(batch{events: []kvEvent{ev}}) {
					v.View()
				}
			}
		})
	}
}

// sampleRecord is a load record with 8 instances, the size the fleet budget
// assumes.
func sampleRecord(id string, seq uint64) string {
	r := discovery.LoadReport{SidecarID: id, Seq: seq, PeriodMillis: 2000}
	for i := range 8 {
		r.Instances = append(r.Instances, discovery.InstanceLoad{
			ID: fmt.Sprintf("gpu-%c-%d", 'a'+i%3, i), InFlight: int64(i + 1), TokensInFlight: int64(1000 * (i + 1)),
			Queued:     discovery.QueuedByPriority{Normal: int64(i % 2)},
			TTFTMillis: 142.5, TPOTMillis: 21.25, ErrorRate: 0.01, Breaker: "closed",
		})
	}
	v, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return string(v)
}

func percentileMs(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}
