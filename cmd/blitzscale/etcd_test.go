package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

// TestEmbeddedSidecarAndRegister runs the two commands a single host uses:
// `sidecar --registry embedded` and `register --registry etcd` pointing at
// it, with a real simulated engine. The engine becomes routable, and on
// SIGTERM of `register` it drains (no new requests) and then leaves.
func TestEmbeddedSidecarAndRegister(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{ID: "e1", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	engine := httptest.NewServer(sim)
	t.Cleanup(engine.Close)

	etcdAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	_, sidecarErr, stopSidecar := startCmd(t, "sidecar", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--registry", "embedded", "--state-dir", t.TempDir(), "--etcd-endpoints", etcdAddr, "--sidecar-id", "host-1")
	waitFor(t, "sidecar readiness", func() bool { return get(base+"/readyz") == http.StatusOK })

	_, registerErr, stopRegister := startCmd(t, "register", "--registry", "etcd", "--etcd-endpoints", etcdAddr,
		"--id", "e1", "--address", engine.Listener.Addr().String(), "--model", "m", "--meta", "engine=llmsim",
		"--probe-interval", "50ms", "--drain-period", "300ms")
	chat := func() (int, string) {
		resp, err := http.Post(base+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, "the registered engine to become routable", func() bool { code, _ := chat(); return code == http.StatusOK })

	done := make(chan int, 1)
	go func() { done <- stopRegister() }()
	// While it drains the instance is still listed but takes no new work.
	waitFor(t, "draining", func() bool {
		code, body := chat()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no_healthy_upstream")
	})
	waitFor(t, "removal", func() bool {
		code, body := chat()
		return code == http.StatusNotFound && strings.Contains(body, "model_not_found")
	})
	if code := <-done; code != 0 {
		t.Errorf("register exit %d; stderr:\n%s", code, registerErr.String())
	}
	if code := stopSidecar(); code != 0 {
		t.Errorf("sidecar exit %d; stderr:\n%s", code, sidecarErr.String())
	}
}

func get(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestTwoSidecarsShareLoad runs two sidecars on one etcd (the first one's
// embedded server): streams open through the first must show up as global
// in-flight in the second's routing view, and vanish when they end.
func TestTwoSidecarsShareLoad(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{ID: "e1", Models: []string{"m"}, TTFT: time.Millisecond, ITL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	engine := httptest.NewServer(sim)
	t.Cleanup(engine.Close)
	etcdAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	a := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	b := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, aErr, stopA := startCmd(t, "sidecar", "--listen", a, "--registry", "embedded", "--state-dir", t.TempDir(),
		"--etcd-endpoints", etcdAddr, "--sidecar-id", "a", "--load-period", "100ms")
	waitFor(t, "sidecar a", func() bool { return get("http://"+a+"/readyz") == http.StatusOK })
	_, bErr, stopB := startCmd(t, "sidecar", "--listen", b, "--registry", "etcd", "--state-dir", t.TempDir(),
		"--etcd-endpoints", etcdAddr, "--sidecar-id", "b", "--load-period", "100ms")
	_, _, stopRegister := startCmd(t, "register", "--registry", "etcd", "--etcd-endpoints", etcdAddr,
		"--id", "e1", "--address", engine.Listener.Addr().String(), "--model", "m", "--probe-interval", "50ms", "--drain-period", "1ms")

	globalInB := func() int64 {
		_, st, err := fetchState(t.Context(), http.DefaultClient, "http://"+b)
		if err != nil || len(st.Instances) != 1 {
			return -1
		}
		return st.Instances[0].GlobalInFlight - st.Instances[0].InFlight
	}
	waitFor(t, "sidecar b to see the engine", func() bool { return globalInB() == 0 })
	waitFor(t, "sidecar a to see the engine", func() bool {
		_, st, err := fetchState(t.Context(), http.DefaultClient, "http://"+a)
		return err == nil && len(st.Instances) == 1
	})

	const streams = 3
	var bodies []io.ReadCloser
	for range streams {
		resp, err := http.Post("http://"+a+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"m","prompt":"hi","max_tokens":200,"stream":true}`))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream through a: %v %v", resp, err)
		}
		buf := make([]byte, 1)
		if _, err := resp.Body.Read(buf); err != nil { // the stream is open
			t.Fatal(err)
		}
		bodies = append(bodies, resp.Body)
	}
	waitFor(t, "b to see a's 3 streams", func() bool { return globalInB() == streams })
	for _, body := range bodies {
		body.Close()
	}
	waitFor(t, "b to see a's streams end", func() bool { return globalInB() == 0 })

	stopRegister()
	if code := stopB(); code != 0 {
		t.Errorf("sidecar b exit %d:\n%s", code, bErr.String())
	}
	if code := stopA(); code != 0 {
		t.Errorf("sidecar a exit %d:\n%s", code, aErr.String())
	}
}
