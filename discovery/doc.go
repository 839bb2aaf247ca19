// Package discovery owns the value types every registry produces and every
// consumer reads: Instance, Snapshot and LoadReport, and the Source and
// Publisher interfaces that registries implement.
//
// The registry-agnostic halves of every registry package live here too:
// load-record decoding and validation, PeerView (peers' records aged by
// receive time) and Backoff, so that etcd and Consul age and retry alike.
//
// Persist wraps any Source so that its last good snapshot survives a
// restart while the registry is down (static stability).
//
// It must not know any registry client library (etcd, Consul, a file
// watcher): those live in discovery/<registry> and depend on this package,
// never the other way round. Decoding and validation here are pure
// functions so that every registry applies the same rules.
package discovery
