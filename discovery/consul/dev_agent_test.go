package consul

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/hashicorp/consul/api"
)

// The tests in this file run against a real `consul agent -dev` (Consul
// 1.14 or newer) when one is available: CONSUL_BIN names the binary, else
// `consul` is looked up on PATH. Without one they skip and say why. They
// are named TestConsulDev* so that `make test-consul` can run just them;
// `make test` runs them too. See deploy/consul/README.md.

// devAgent is a `consul agent -dev` started for one test, on free loopback
// ports, killed when the test ends.
type devAgent struct {
	addr string
	node string
	out  *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func consulBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CONSUL_BIN"); p != "" {
		return p
	}
	p, err := exec.LookPath("consul")
	if err != nil {
		t.Skip("no consul binary: set CONSUL_BIN or put consul on PATH; see deploy/consul/README.md")
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startDevAgent(t testing.TB) *devAgent {
	t.Helper()
	bin := consulBinary(t)
	dir := t.TempDir()
	httpPort := freePort(t)
	cfg := fmt.Sprintf("ports {\n  http = %d\n  dns = -1\n  grpc = -1\n  grpc_tls = -1\n  serf_lan = %d\n  serf_wan = %d\n  server = %d\n}\n",
		httpPort, freePort(t), freePort(t), freePort(t))
	if err := os.WriteFile(filepath.Join(dir, "ports.hcl"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &devAgent{addr: fmt.Sprintf("127.0.0.1:%d", httpPort), node: "blitz-test", out: &syncBuffer{}}
	cmd := exec.Command(bin, "agent", "-dev", "-node", a.node, "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-config-file", filepath.Join(dir, "ports.hcl"), "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = a.out, a.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("consul agent output:\n%s", a.out.String())
		}
	})
	// Ready when there is a leader and the node's serfHealth passes (a
	// session needs both).
	c := a.client(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := c.Status().Leader()
		checks, _, err2 := c.Health().Node(a.node, nil)
		if err == nil && err2 == nil && leader != "" && len(checks) > 0 && checks.AggregatedStatus() == api.HealthPassing {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul agent not ready after 30s (leader %q, %v, %v); output:\n%s", leader, err, err2, a.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (a *devAgent) client(t testing.TB) *api.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := Dial(DialConfig{Address: a.addr, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (a *devAgent) config(t testing.TB) Config {
	return Config{Client: a.client(t), Logger: quietLogger(), InitialBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		RequestTimeout: 5 * time.Second, WaitTime: 2 * time.Second, QueryInterval: 20 * time.Millisecond}
}

func TestConsulDevRegisterDiscoverDrain(t *testing.T) {
	a := startDevAgent(t)
	cfg := a.config(t)
	r, err := NewRegistrar(RegistrarConfig{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background()) })
	s := newSource(t, cfg)
	ch := watch(t, s)
	next(t, ch, "the first, empty snapshot", hasIDs())

	ctx := context.Background()
	in := gpu("gpu-a-0")
	if err := r.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	snap := next(t, ch, "the registered instance", hasIDs("gpu-a-0"))
	if !in.Equal(snap.Instances[0]) {
		t.Errorf("read back %+v, want %+v", snap.Instances[0], in)
	}
	if err := r.SetDraining(ctx, true); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "out of routing while draining", hasIDs())
	if err := r.SetDraining(ctx, false); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "back after draining", hasIDs("gpu-a-0"))

	// The heartbeat keeps the 10s TTL check passing: the instance stays
	// past its TTL. Meanwhile the idle watch blocks: about one query per
	// WaitTime (2s), not a spin.
	before := s.Queries()
	quiet(t, ch, 12*time.Second, "a registered instance with a live registrar")
	if n := s.Queries() - before; n > 12/2+2 {
		t.Errorf("%d queries in 12s of quiet with a 2s wait", n)
	}

	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "gone after Deregister", hasIDs())
}

func TestConsulDevLoadRecords(t *testing.T) {
	a := startDevAgent(t)
	cfg := a.config(t)
	ctx := context.Background()
	pub := func(id string, renew time.Duration) *Publisher {
		p, err := NewPublisher(PublisherConfig{Config: cfg, SidecarID: id, RenewInterval: renew})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close(context.Background()) })
		return p
	}
	pa, pb := pub("a", 100*time.Millisecond), pub("b", 5*time.Second)
	_, ch := watchLoad(t, LoadSourceConfig{Config: cfg, SidecarID: "b"})
	if err := pa.Publish(ctx, report("a", 1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := pb.Publish(ctx, report("b", 1, 1)); err != nil {
		t.Fatal(err)
	}
	got := next(t, ch, "a's record", hasPeers("a"))
	if got[0].Instances[0].InFlight != 3 {
		t.Errorf("a's in-flight %d, want 3", got[0].Instances[0].InFlight)
	}

	kv := cfg.Client.KV()
	pair, _, err := kv.Get(loadPrefix+"a", nil)
	if err != nil || pair == nil || pair.Session == "" {
		t.Fatalf("a's record %+v, %v: want one held by a session", pair, err)
	}
	entry, _, err := cfg.Client.Session().Info(pair.Session, nil)
	if err != nil || entry == nil || entry.Behavior != api.SessionBehaviorDelete || entry.TTL != "10s" {
		t.Fatalf("a's session %+v, %v: want behaviour delete, TTL 10s", entry, err)
	}

	// Another session cannot take the key.
	other := pub("a", 5*time.Second)
	if err := other.Publish(ctx, report("a", 9, 9)); !errors.Is(err, ErrKeyHeld) {
		t.Errorf("a second holder's Publish: %v, want ErrKeyHeld", err)
	}
	if err := other.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Consul invalidates a's session: the record goes, then comes back under
	// a new session (lock-delay must not hold it for 15s).
	if _, err := cfg.Client.Session().Destroy(pair.Session, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a's record restored", func() bool {
		p, _, err := kv.Get(loadPrefix+"a", nil)
		return err == nil && p != nil && p.Session != "" && p.Session != pair.Session
	})

	if err := pa.Close(ctx); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "a gone after Close", hasPeers())
	if p, _, err := kv.Get(loadPrefix+"a", nil); err != nil || p != nil {
		t.Errorf("a's record after Close: %+v, %v", p, err)
	}
}

func TestConsulDevKeepRegistered(t *testing.T) {
	a := startDevAgent(t)
	cfg := a.config(t)
	engine := newEngine(t)
	r, err := NewRegistrar(RegistrarConfig{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ch := watch(t, newSource(t, cfg))
	in := gpu("sglang-0")
	in.Address = engine
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- discovery.KeepRegistered(ctx, r, in, discovery.ProbeConfig{Interval: 100 * time.Millisecond, DrainPeriod: 500 * time.Millisecond, Logger: quietLogger()})
	}()
	next(t, ch, "registered", hasIDs("sglang-0"))
	cancel()
	next(t, ch, "out of routing on shutdown", hasIDs())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if svc, _, err := cfg.Client.Agent().Service("sglang-0", nil); err == nil || svc != nil {
		t.Errorf("still registered after shutdown: %+v, %v", svc, err)
	}
}

// newEngine serves 200 on every path, like an engine's /health.
func newEngine(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}
