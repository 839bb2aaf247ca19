package consul

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

func newRegistrar(t testing.TB, f *fakeConsul, beat time.Duration) *Registrar {
	t.Helper()
	r, err := NewRegistrar(RegistrarConfig{Config: testConfig(f), HeartbeatInterval: beat})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background()) })
	return r
}

func gpu(id string) discovery.Instance {
	return discovery.Instance{ID: id, Address: "10.0.0.5:8000", Models: []string{"llama-3.1-8b", "llama-3.1-8b:sql-lora"},
		Meta: map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192"}, Weight: 2}
}

func TestRegistrarRegistersWithTheAgent(t *testing.T) {
	f := newFakeConsul(t)
	r := newRegistrar(t, f, 10*time.Millisecond)
	if err := r.Register(context.Background(), gpu("gpu-a-0")); err != nil {
		t.Fatal(err)
	}
	reg, ok := f.registration("gpu-a-0")
	if !ok {
		t.Fatal("nothing registered")
	}
	want := api.AgentServiceRegistration{
		ID: "gpu-a-0", Name: "llm", Address: "10.0.0.5", Port: 8000,
		Tags:    []string{"model=llama-3.1-8b", "model=llama-3.1-8b:sql-lora"},
		Meta:    map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192"},
		Weights: &api.AgentWeights{Passing: 2, Warning: 1},
		Check: &api.AgentServiceCheck{CheckID: "service:gpu-a-0", Name: "blitzscale register heartbeat", TTL: "10s",
			Status: api.HealthPassing, DeregisterCriticalServiceAfter: "1m0s"},
	}
	if diff := cmp.Diff(want, reg); diff != "" {
		t.Errorf("registration (-want +got):\n%s", diff)
	}
	// The registration is what a Source reads back.
	ch := watch(t, newSource(t, testConfig(f)))
	snap := next(t, ch, "the registered instance", hasIDs("gpu-a-0"))
	if diff := cmp.Diff(gpu("gpu-a-0"), snap.Instances[0]); diff != "" {
		t.Errorf("instance read back (-want +got):\n%s", diff)
	}
	eventually(t, "heartbeats", func() bool { return len(f.requestsTo(http.MethodPut, "/v1/agent/check/update/service:gpu-a-0")) >= 3 })
}

func TestRegistrarDrainingIsMaintenance(t *testing.T) {
	f := newFakeConsul(t)
	r := newRegistrar(t, f, time.Second)
	ctx := context.Background()
	if err := r.SetDraining(ctx, true); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("SetDraining before Register: %v, want ErrNotRegistered", err)
	}
	if err := r.Register(ctx, gpu("a")); err != nil {
		t.Fatal(err)
	}
	ch := watch(t, newSource(t, testConfig(f)))
	next(t, ch, "[a]", hasIDs("a"))

	if err := r.SetDraining(ctx, true); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "a out of routing", hasIDs())
	s, checks, _ := f.service("a")
	if s.Meta[MetaDraining] != "true" {
		t.Errorf("meta %v: want draining=true", s.Meta)
	}
	if c, ok := checks["_service_maintenance:a"]; !ok || c.Status != api.HealthCritical {
		t.Errorf("checks %v: want a critical maintenance check", checks)
	}
	// Maintenance goes on before the registration is rewritten.
	var order []string
	for _, req := range f.requestsTo(http.MethodPut, "/v1/agent/service/") {
		order = append(order, req.path+"?"+req.query.Get("enable"))
	}
	wantTail := []string{"/v1/agent/service/maintenance/a?true", "/v1/agent/service/register?"}
	if got := order[len(order)-2:]; !cmp.Equal(wantTail, got) {
		t.Errorf("last agent calls %v, want %v", got, wantTail)
	}

	if err := r.SetDraining(ctx, false); err != nil {
		t.Fatal(err)
	}
	got := next(t, ch, "a back", hasIDs("a"))
	if got.Instances[0].Draining {
		t.Error("a still draining")
	}
	if _, checks, _ := f.service("a"); len(checks) != 1 {
		t.Errorf("checks %v: want the heartbeat check only", checks)
	}
}

// TestRegistrarRestoresAfterAgentRestart: an agent that lost its state
// answers the heartbeat with 404; the registrar registers again, in
// maintenance if it was draining.
func TestRegistrarRestoresAfterAgentRestart(t *testing.T) {
	f := newFakeConsul(t)
	r := newRegistrar(t, f, 10*time.Millisecond)
	ctx := context.Background()
	if err := r.Register(ctx, gpu("a")); err != nil {
		t.Fatal(err)
	}
	if err := r.SetDraining(ctx, true); err != nil {
		t.Fatal(err)
	}
	f.restart()
	eventually(t, "a registered again, in maintenance", func() bool {
		s, checks, ok := f.service("a")
		_, maint := checks["_service_maintenance:a"]
		return ok && maint && s.Meta[MetaDraining] == "true"
	})
	if err := r.SetDraining(ctx, false); err != nil {
		t.Fatal(err)
	}
	f.removeService("a") // an operator deregisters it by hand
	eventually(t, "a registered again", func() bool {
		_, checks, ok := f.service("a")
		_, maint := checks["_service_maintenance:a"]
		return ok && !maint
	})
}

func TestRegistrarDeregister(t *testing.T) {
	f := newFakeConsul(t)
	r := newRegistrar(t, f, 10*time.Millisecond)
	ctx := context.Background()
	if err := r.Deregister(ctx); err != nil {
		t.Fatalf("Deregister with nothing registered: %v", err)
	}
	if err := r.Register(ctx, gpu("a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, gpu("b")); err == nil {
		t.Error("Register of another id while a is registered succeeded")
	}
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := f.service("a"); ok {
		t.Fatal("a still registered")
	}
	beats := len(f.requestsTo(http.MethodPut, "/v1/agent/check/update/"))
	quietFor := 50 * time.Millisecond // five heartbeat intervals
	time.Sleep(quietFor)              // the assertion is that nothing happens
	if n := len(f.requestsTo(http.MethodPut, "/v1/agent/check/update/")); n != beats {
		t.Errorf("%d heartbeats after Deregister", n-beats)
	}
	// An instance the agent already forgot counts as removed.
	if err := r.Register(ctx, gpu("b")); err != nil {
		t.Fatal(err)
	}
	f.removeService("b")
	if err := r.Deregister(ctx); err != nil {
		t.Errorf("Deregister of an instance the agent forgot: %v", err)
	}
}

// TestRegistrarPartialRegister is the regression test for a Register whose
// context ended after the agent took the registration but before the
// registrar's last call: the registrar must still hold the instance, so
// that the background retry completes it and Deregister removes it (it
// used to treat it as never registered, leaving it in the agent).
func TestRegistrarPartialRegister(t *testing.T) {
	f := newFakeConsul(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/maintenance/") {
			http.Error(w, "context canceled", http.StatusInternalServerError)
			return true
		}
		return false
	})
	r := newRegistrar(t, f, 10*time.Millisecond)
	ctx := context.Background()
	if err := r.Register(ctx, gpu("a")); err == nil {
		t.Fatal("Register succeeded although its last call failed")
	}
	if _, _, ok := f.service("a"); !ok {
		t.Fatal("the agent should hold the registration")
	}
	f.setHook(nil)
	eventually(t, "the background retry", func() bool {
		return len(f.requestsTo(http.MethodPut, "/v1/agent/check/update/")) > 0
	})
	if err := r.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := f.service("a"); ok {
		t.Error("a still registered after Deregister")
	}
}

func TestValidateInstance(t *testing.T) {
	tests := []struct {
		name    string
		meta    map[string]string
		wantErr string
	}{
		{name: "contract meta", meta: map[string]string{"engine": "vllm", "max_model_len": "8192", "metrics_path": "/metrics"}},
		{name: "draining is the registrar's", meta: map[string]string{"draining": "true"}, wantErr: `meta["draining"]`},
		{name: "dots are not accepted by Consul", meta: map[string]string{"gpu.type": "h100"}, wantErr: `meta["gpu.type"]`},
		{name: "reserved prefix", meta: map[string]string{"consul-version": "1"}, wantErr: `meta["consul-version"]`},
		{name: "long value", meta: map[string]string{"notes": strings.Repeat("x", 513)}, wantErr: `meta["notes"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := gpu("a")
			in.Meta = tt.meta
			err := ValidateInstance(in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidValue) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want ErrInvalidValue naming %s", err, tt.wantErr)
			}
		})
	}
	if err := ValidateInstance(discovery.Instance{ID: "a"}); !errors.Is(err, discovery.ErrInvalidInstance) {
		t.Errorf("instance without address: %v, want ErrInvalidInstance", err)
	}
}

// TestKeepRegisteredWithConsul runs the register command's policy against
// the fake: registered after a healthy probe, draining (maintenance) on
// shutdown for the drain period, then deregistered.
func TestKeepRegisteredWithConsul(t *testing.T) {
	f := newFakeConsul(t)
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer engine.Close()
	r := newRegistrar(t, f, time.Second)
	in := gpu("a")
	in.Address = engine.Listener.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- discovery.KeepRegistered(ctx, r, in, discovery.ProbeConfig{Interval: 10 * time.Millisecond, DrainPeriod: 20 * time.Millisecond, Logger: quietLogger()})
	}()
	eventually(t, "a registered", func() bool { _, _, ok := f.service("a"); return ok })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("KeepRegistered did not return")
	}
	if _, _, ok := f.service("a"); ok {
		t.Error("a still registered")
	}
	var calls []string
	for _, req := range f.requestsTo(http.MethodPut, "/v1/agent/service/") {
		calls = append(calls, strings.TrimPrefix(req.path, "/v1/agent/service/")+req.query.Get("enable"))
	}
	if want := []string{"maintenance/atrue", "register", "deregister/a"}; !cmp.Equal(want, calls[len(calls)-3:]) {
		t.Errorf("agent calls %v: want to end with %v", calls, want)
	}
}
