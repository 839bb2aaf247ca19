package breaker

import "testing"

// BenchmarkAllow measures the per-request cost the proxy pays: Allow plus
// Done on a closed breaker.
func BenchmarkAllow(b *testing.B) {
	s := newTestSet(b, Config{}, "a", "b", "c")
	b.ReportAllocs()
	for b.Loop() {
		done, err := s.Allow("b")
		if err != nil {
			b.Fatal(err)
		}
		done(Success)
	}
}

// BenchmarkAllowParallel is the same from many goroutines on one instance,
// where gobreaker's per-breaker mutex is shared.
func BenchmarkAllowParallel(b *testing.B) {
	s := newTestSet(b, Config{}, "a")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := s.Allow("a")
			if err != nil {
				b.Error(err)
				return
			}
			done(Success)
		}
	})
}
