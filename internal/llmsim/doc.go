// Package llmsim simulates an OpenAI-compatible inference engine (a vLLM
// stand-in) over real HTTP, for the router's tests, the demo and benchmarks.
//
// It owns:
//
//   - the OpenAI wire shapes of /v1/chat/completions, /v1/completions,
//     /v1/embeddings and /v1/models, streaming (SSE) and not, and OpenAI-shaped
//     error bodies;
//   - an engine model with vLLM's observable behaviour: a bounded number of
//     running requests (like --max-num-seqs) with a FIFO waiting queue, time to
//     first token and inter-token pacing, an LRU prefix cache of chain-hashed
//     prompt blocks that shortens time to first token, and cancellation the
//     moment a client goes away;
//   - vLLM-named Prometheus metrics on a private registry (GET /metrics) and
//     a health endpoint (GET /health);
//   - fault injection (errors, hangs, slowness, unhealthy, streams cut mid-way),
//     settable in-process with SetFaults or at runtime with POST /sim/faults,
//     plus GET /sim/stats for counters that tests assert on.
//
// Like vLLM (a FastAPI StreamingResponse), a streaming request gets its
// response headers as soon as it is admitted to the queue, before its first
// token; a non-streaming request gets nothing until its whole answer is ready.
// The prefix cache is consulted on admission rather than when the request
// gets a running slot (as vLLM does), so that the hit count can travel in
// the X-Sim-Prefix-Hit-Blocks header of a stream whose headers precede its
// slot.
//
// It must not know about the router: no discovery, routing or sidecar
// imports. It starts no goroutines of its own; all work runs on the calling
// request's goroutine and every wait selects on the request's context.
package llmsim
