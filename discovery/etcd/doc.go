// Package etcd is the etcd registry of BlitzScale Router. It owns:
//
//   - Source: the instances under <prefix>/services/<service>/instances/ as
//     a stream of whole discovery.Snapshots (list, then watch from the next
//     revision; full re-read with capped backoff on any watch failure);
//   - LoadSource and Publisher: the sidecars' load records under
//     <prefix>/services/<service>/load/<sidecar-id>, each on its writer's
//     lease, aged by receive time;
//   - Registrar: one instance kept under a lease for `blitzscale register`
//     (discovery.KeepRegistered holds the probing policy);
//   - StartEmbedded: an in-process single-node etcd on loopback, and Dial,
//     so that no other package imports an etcd library.
//
// It is the only package that imports go.etcd.io/etcd. It must not know
// routing, breakers, HTTP serving or how often the sidecar publishes: it
// turns registry state into discovery values and back, nothing more. Key
// layout and JSON values follow DESIGN.md's registry contract.
package etcd
