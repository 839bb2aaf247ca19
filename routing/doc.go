// Package routing owns the sidecar's routing view and its decisions: the
// immutable Table built from a discovery.Snapshot and swapped whole, the live
// per-instance Load counters that survive swaps, the candidate rules and
// pickers that choose an instance (round-robin, random, least-load, p2c and
// affinity: consistent hashing with bounded load), the per-instance
// concurrency caps with their per-model priority queues, and priority
// admission.
//
// It must not know HTTP, registries or their client libraries: it sees
// instances only as discovery values, and the sidecar feeds it snapshots,
// peer and engine load, and requests. Pick takes no locks and allocates
// nothing, and the sampling pickers cost the same whatever the number of
// instances. Acquire adds one short per-instance lock, so that the cap check
// and the in-flight count cannot race; only a request that must wait in a
// queue allocates.
package routing
