package upstream

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The two benchmarks send the same small POST, sequentially, to the same
// kind of server, through this client and through net/http's Transport set
// up alike; allocations include the server's, the same in both.
func benchmarkRoundTrip(b *testing.B, rt http.RoundTripper) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"cmpl-1","choices":[{"text":"hi"}]}`)
	}))
	b.Cleanup(srv.Close)
	payload := []byte(`{"model":"m","prompt":"hello","max_tokens":1}`)
	url := srv.URL + "/v1/completions"
	b.ReportAllocs()
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			b.Fatal(err)
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

func BenchmarkRoundTrip(b *testing.B) {
	c := &Client{MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 10 * time.Second}
	b.Cleanup(c.Close)
	benchmarkRoundTrip(b, c)
}

func BenchmarkRoundTripNetHTTP(b *testing.B) {
	tr := &http.Transport{
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		DisableCompression:    true, // the client adds no Accept-Encoding either
	}
	b.Cleanup(tr.CloseIdleConnections)
	benchmarkRoundTrip(b, tr)
}
