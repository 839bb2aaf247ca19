// Package loadgen drives an OpenAI-compatible endpoint (an engine, the
// sidecar, or any reverse proxy in front of one) and measures what a client
// sees: time to first token, inter-token latency, end-to-end latency,
// throughput and errors by kind, in HDR histograms.
//
// It owns:
//
//   - two load models: an open loop that sends requests on a fixed schedule
//     whatever the responses do, measuring every latency from the intended
//     send time so that a slow server cannot hide its stalls by slowing the
//     sender (coordinated omission); and a closed loop of a fixed number of
//     workers, each sending its next request when the last one ends;
//   - a streaming reader that times server-sent events without decoding
//     their JSON: a data event is a token event unless it is [DONE], the
//     usage-only chunk, an error event or a chunk whose content is empty;
//   - the Result it returns and writes as JSON.
//
// It must not know about the router: it speaks HTTP to a base URL and
// imports nothing of this module.
package loadgen
