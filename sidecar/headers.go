package sidecar

import (
	"net/http"
	"strings"
)

// hopHeaders are meaningful for one connection only and must not cross the
// proxy (RFC 9110 section 7.6.1), as in net/http/httputil.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers from h in place, including
// those the Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// copyResponseHeader copies src into dst without hop-by-hop headers. The
// value slices are shared: neither side changes them afterwards.
func copyResponseHeader(dst, src http.Header) {
	var named string
	if c := src["Connection"]; len(c) > 0 {
		named = strings.ToLower(strings.Join(c, ","))
	}
	for k, vv := range src {
		if isHop(k) || (named != "" && connectionNames(named, k)) {
			continue
		}
		dst[k] = vv
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

func connectionNames(named, k string) bool {
	for f := range strings.SplitSeq(named, ",") {
		if strings.EqualFold(strings.TrimSpace(f), k) {
			return true
		}
	}
	return false
}
