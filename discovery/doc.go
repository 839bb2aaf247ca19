// Package discovery owns the value types every registry produces and every
// consumer reads: Instance, Snapshot and LoadReport, and the Source and
// Publisher interfaces that registries implement.
//
// Persist wraps any Source so that its last good snapshot survives a
// restart while the registry is down (static stability).
//
// It must not know any registry client library (etcd, Consul, a file
// watcher): those live in discovery/<registry> and depend on this package,
// never the other way round. Decoding and validation here are pure
// functions so that every registry applies the same rules.
package discovery
