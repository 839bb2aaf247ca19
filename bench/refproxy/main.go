// Command refproxy is a reference point for `make bench`, not part of the
// router: the least a Go reverse proxy can do per request, so that the
// sidecar's cost can be read against what Go itself costs on the machine,
// not only against nginx.
//
// Two implementations, each round-robin over the upstreams with a
// keep-alive pool and nothing else (no routing, retries, metrics or
// per-event stream handling):
//
//	fasthttp  fasthttp's server and HostClient, the fastest Go HTTP stack
//	httputil  net/http's httputil.ReverseProxy over a tuned Transport
//
// It is a module of its own so that fasthttp stays out of the router's
// dependencies.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	impl := flag.String("impl", "fasthttp", "fasthttp or httputil")
	listen := flag.String("listen", "127.0.0.1:18192", "address to serve on")
	upstreams := flag.String("upstream", "", "comma-separated host:port of the engines (required)")
	flag.Parse()
	hosts := strings.Split(*upstreams, ",")
	if *upstreams == "" {
		fmt.Fprintln(os.Stderr, "refproxy: --upstream is required")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refproxy: %v\n", err)
		os.Exit(1)
	}
	switch *impl {
	case "fasthttp":
		err = serveFasthttp(ln, hosts)
	case "httputil":
		err = serveHTTPUtil(ln, hosts)
	default:
		fmt.Fprintf(os.Stderr, "refproxy: --impl must be fasthttp or httputil, not %q\n", *impl)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "refproxy: %v\n", err)
	os.Exit(1)
}

func serveFasthttp(ln net.Listener, hosts []string) error {
	clients := make([]*fasthttp.HostClient, len(hosts))
	for i, h := range hosts {
		clients[i] = &fasthttp.HostClient{Addr: h, MaxConns: 1 << 20, MaxIdleConnDuration: 90 * time.Second, StreamResponseBody: true}
	}
	var next atomic.Uint64
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			c := clients[next.Add(1)%uint64(len(clients))]
			if err := c.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error("upstream failed", fasthttp.StatusBadGateway)
			}
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		NoDefaultContentType:  true,
	}
	return s.Serve(ln)
}

func serveHTTPUtil(ln net.Listener, hosts []string) error {
	targets := make([]*url.URL, len(hosts))
	for i, h := range hosts {
		targets[i] = &url.URL{Scheme: "http", Host: h}
	}
	var next atomic.Uint64
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(targets[next.Add(1)%uint64(len(targets))])
		},
		Transport: &http.Transport{
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		FlushInterval: -1,
	}
	return http.Serve(ln, rp)
}
