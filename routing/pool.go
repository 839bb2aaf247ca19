package routing

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// pool is a set of instances that serve the same models: one per distinct
// instance set in a table, shared by every model with that set (a base model
// and its LoRA adapters usually share one). It holds what is per instance
// set rather than per model: the affinity ring and the live load sums.
type pool struct {
	// endpoints are sorted by instance id; the ring's owners index them.
	endpoints []*Endpoint
	ring      ring
	// inflight and weight sum the fleet's in-flight requests and the weights
	// of the instances that count as candidates (routable, breaker not
	// open). Load keeps them exact under its lock; the affinity bound reads
	// them in O(1) instead of scanning the pool.
	inflight atomic.Int64
	weight   atomic.Int64
	// queues are those of the models served by exactly this set; a release
	// on one of the instances wakes them.
	queues []*modelQueue
}

// poolKey identifies an instance set: ids and weights (the ring depends on
// both) in id order.
func poolKey(eps []*Endpoint) string {
	var b strings.Builder
	for _, ep := range eps {
		b.WriteString(ep.Instance.ID)
		b.WriteByte('*')
		b.WriteString(strconv.Itoa(ep.Instance.EffectiveWeight()))
		b.WriteByte(' ')
	}
	return b.String()
}

// wake tells the first waiter of each queue of pools to retry: capacity on
// one of their instances may have freed up. It costs one atomic load per
// queue when nothing waits.
func wake(pools []*pool) {
	for _, p := range pools {
		for _, q := range p.queues {
			if q.len.Load() > 0 {
				q.wakeHead()
			}
		}
	}
}

// Ring parameters. ringPointsPerWeight virtual nodes per unit of weight keep
// an instance's share of keys within about ±10% of its weighted share;
// maxRingPoints bounds one ring's memory (12 bytes a point) and build time,
// scaling every instance's points down alike when the weights would exceed
// it. maxRingWalk bounds how many points a pick visits before it gives up
// on the ring and scans the pool.
const (
	ringPointsPerWeight = 100
	maxRingPoints       = 1 << 18
	maxRingWalk         = 128
)

// ring is a consistent-hash ring over a pool's instances. It depends only on
// instance ids and weights, so every sidecar with the same snapshot builds
// the same ring and sends a key to the same instance.
type ring struct {
	points []uint64 // sorted positions
	owners []uint32 // owners[i] indexes pool.endpoints
}

// newRing places ringPointsPerWeight × weight points per instance at fixed
// hashes of (instance id, replica index).
func newRing(eps []*Endpoint) ring {
	total := 0
	for _, ep := range eps {
		total += ringPointsPerWeight * ep.Instance.EffectiveWeight()
	}
	scale := 1.0
	if total > maxRingPoints {
		scale = float64(maxRingPoints) / float64(total)
	}
	type point struct {
		pos   uint64
		owner uint32
	}
	pts := make([]point, 0, min(total, maxRingPoints+len(eps)))
	for i, ep := range eps {
		n := max(1, int(float64(ringPointsPerWeight*ep.Instance.EffectiveWeight())*scale))
		seed := fnv1a(fnvOffset, ep.Instance.ID)
		for r := range n {
			pts = append(pts, point{pos: ringPos(seed, uint32(r)), owner: uint32(i)})
		}
	}
	// Equal positions are ordered by owner, itself ordered by id, so ties
	// resolve the same way everywhere.
	slices.SortFunc(pts, func(a, b point) int {
		if a.pos != b.pos {
			if a.pos < b.pos {
				return -1
			}
			return 1
		}
		return int(a.owner) - int(b.owner)
	})
	rg := ring{points: make([]uint64, len(pts)), owners: make([]uint32, len(pts))}
	for i, p := range pts {
		rg.points[i], rg.owners[i] = p.pos, p.owner
	}
	return rg
}

// search returns the index of the first point at or after the key's
// position, wrapping to 0.
func (rg *ring) search(key uint64) int {
	i, _ := slices.BinarySearch(rg.points, keyPos(key))
	if i == len(rg.points) {
		return 0
	}
	return i
}

// FNV-1a (64 bit) constants. The hash is fixed, unlike hash/maphash, whose
// per-process seed would give every sidecar a different ring.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1a(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// ringPos is the position of replica r of the instance whose id hashes to
// seed.
func ringPos(seed uint64, r uint32) uint64 {
	h := seed ^ '#'
	h *= fnvPrime
	for range 4 {
		h ^= uint64(r & 0xff)
		h *= fnvPrime
		r >>= 8
	}
	return mix64(h)
}

// keyPos spreads an affinity key over the ring: FNV-1a of short keys leaves
// the high bits poorly mixed, and the ring orders by them.
func keyPos(key uint64) uint64 { return mix64(key) }

// mix64 is the splitmix64 finalizer, a fixed bijection with full avalanche.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
