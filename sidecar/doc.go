// Package sidecar is the HTTP server of the per-host router: the
// OpenAI-compatible proxy with SSE streaming, the health, readiness, state
// and metrics endpoints, and OpenAI-shaped errors.
//
// It asks package routing which instance takes a request and feeds it the
// snapshots of a discovery.Source; it must not know which registry produced
// them, nor import any registry client library. Nothing imports sidecar but
// cmd.
package sidecar
