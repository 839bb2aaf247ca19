// Package consul is the Consul registry of BlitzScale Router. It owns:
//
//   - Source: the passing instances of one Consul service as a stream of
//     whole discovery.Snapshots, from one blocking query on
//     /v1/health/service/<service>?passing (models from model=<id> tags,
//     attributes from Meta, weight from Weights.Passing);
//   - Publisher and LoadSource: the sidecars' load records in KV under
//     <KVPrefix>/services/<service>/load/<sidecar-id>, each held by its
//     writer's session (behaviour "delete"), read with a blocking KV list
//     query and aged by receive time;
//   - Registrar: one instance registered with the local agent, with a TTL
//     check the registrar keeps passing, for `blitzscale register`
//     (discovery.KeepRegistered holds the probing policy);
//   - Dial, so that no other package imports the Consul client library.
//
// Every blocking query follows Consul's documented rules (see blocking.go):
// the index is reset to 0 when it goes backwards and never blocks on 0, a
// token bucket paces the loop so that a query answered at once cannot spin,
// each request has a deadline above wait + wait/16, errors back off with a
// cap, and stale reads are bounded by LastContact.
//
// It is the only package that imports github.com/hashicorp/consul/api. It
// must not know routing, breakers, HTTP serving or how often the sidecar
// publishes: it turns registry state into discovery values and back.
package consul
