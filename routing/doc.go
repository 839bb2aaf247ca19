// Package routing owns the sidecar's routing view and its decisions: the
// immutable Table built from a discovery.Snapshot and swapped whole, the live
// per-instance Load counters that survive swaps, the candidate filters and
// pickers that choose an instance, and priority admission.
//
// It must not know HTTP, registries or their client libraries: it sees
// instances only as discovery values, and the sidecar feeds it snapshots and
// requests. The pick path takes no locks and allocates nothing.
package routing
