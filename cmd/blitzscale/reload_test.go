package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/internal/llmsim"
)

func TestCheckConfig(t *testing.T) {
	good := writeFile(t, "i.yaml", "- {id: a, address: '127.0.0.1:9', models: [m]}\n")
	code, out, stderr := runCmd(t, "sidecar", "--registry", "static", "--static-file", good, "--check-config")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("valid: exit %d, out %q, err %q", code, out, stderr)
	}
	cfg := writeFile(t, "c.yaml", "model-first-byte-timeout: [llama-70b=300s, tiny=5s]\n")
	code, out, stderr = runCmd(t, "sidecar", "--registry", "static", "--static-file", good, "--check-config", "--config", cfg)
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("per-model first-byte timeouts from the file: exit %d, out %q, err %q", code, out, stderr)
	}
	code, _, stderr = runCmd(t, "sidecar", "--registry", "static", "--static-file", good, "--check-config", "--queue-max", "-4")
	if code != 2 || !strings.Contains(stderr, "queue-max") {
		t.Errorf("invalid: exit %d, err %q", code, stderr)
	}
}

// TestSighupReloadsConfigFile: a reload re-reads the config file; an invalid
// file is refused and the running configuration stays.
func TestSighupReloadsConfigFile(t *testing.T) {
	sim, err := llmsim.New(llmsim.Config{ID: "e1", Models: []string{"m"}, TTFT: time.Millisecond, ITL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	engine := httptest.NewServer(sim)
	t.Cleanup(engine.Close)
	instances := writeFile(t, "instances.yaml", fmt.Sprintf("- {id: e1, address: '%s', models: [m]}\n", engine.Listener.Addr()))
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfgFile := writeFile(t, "sidecar.yaml", "")
	writeCfg := func(policy string) {
		body := fmt.Sprintf("registry: static\nstatic-file: %s\nlisten: 127.0.0.1:%d\npolicy: %s\n", instances, port, policy)
		if err := os.WriteFile(cfgFile, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("round-robin")

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan struct{})
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runEnv(ctx, []string{"sidecar", "--config", cfgFile}, env{stdout: &stderr, stderr: &stderr, getenv: noEnv, reload: hup})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d:\n%s", code, stderr.String())
		}
	})
	route := func() string {
		resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"m","max_tokens":1,"prompt":"x"}`))
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return resp.Header.Get("X-Blitz-Route")
	}
	waitFor(t, "round-robin routing", func() bool { return route() == "round-robin" })

	writeCfg("least-load")
	hup <- struct{}{}
	waitFor(t, "least-load after the reload", func() bool { return route() == "least-load" })

	writeCfg("fastest")
	hup <- struct{}{}
	waitFor(t, "the refusal to be logged", func() bool { return strings.Contains(stderr.String(), "reload refused") })
	if got := route(); got != "least-load" {
		t.Errorf("after an invalid reload the route is %q, want least-load kept", got)
	}
}
