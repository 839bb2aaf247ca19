// Package chaostest holds the chaos tests of issue 5: the real sidecar
// (sidecar.New and Run on a real socket), real simulated engines
// (internal/llmsim) and a real registry (static file, embedded etcd), with
// faults injected (killed, erroring, hung and mid-stream-crashing engines,
// every engine down, a registry outage across a sidecar restart), asserting
// only what a client sees over HTTP. It also holds the failover benchmarks,
// run when BLITZ_CHAOS_BENCH=1.
//
// It has no non-test code: this file exists so that the directory is a
// package. Nothing may import it.
package chaostest
