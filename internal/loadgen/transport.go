package loadgen

import (
	"net"
	"net/http"
	"time"
)

// newTransport is a client transport for benchmarking: a keep-alive pool
// large enough that no request ever waits for or re-dials a connection,
// and no compression, so the client spends its CPU on requests rather than
// on gzip. It never uses an environment proxy: targets are given exactly.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		// HTTP/1.1 only: the engines and proxies under test speak it on
		// loopback, and one stream per connection is what is measured.
		ForceAttemptHTTP2: false,
	}
}
