package sidecar

import (
	"net/http"

	"github.com/blitzscale/router/routing"
)

// setAffinity gives req its affinity key, in order of precedence: the
// X-Blitz-Session header, the body's prompt_cache_key, its user, or the
// leading AffinityPrefixBytes of its prompt (messages, prompt or input) —
// so that every sidecar of the fleet independently sends the same session
// or shared prefix to the same instance, where the engine's prefix cache
// already holds it.
func (s *Server) setAffinity(req *routing.Request, r *http.Request, f *bodyFields) {
	var key []byte
	if v := r.Header[headerSession]; len(v) > 0 && v[0] != "" {
		req.AffinityKey, req.HasAffinity = fnv1aString(v[0]), true
		return
	}
	switch {
	case len(f.promptCacheKey) > 2:
		key = f.promptCacheKey
	case len(f.user) > 2:
		key = f.user
	case len(f.prompt) > 0:
		key = f.prompt[:min(len(f.prompt), s.conf().AffinityPrefixBytes)]
	default:
		return
	}
	req.AffinityKey, req.HasAffinity = fnv1a(key), true
}

// FNV-1a, 64 bit: stable across processes and versions (unlike
// hash/maphash), which the fleet-wide affinity needs, and it does not
// allocate (unlike hash/fnv's interface).
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1a(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnv1aString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}
