package consul

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/blitzscale/router/discovery"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

// entry builds a health entry on node-1 (10.0.0.1) with a passing service
// check; edit tweaks it.
func entry(id string, edit func(e *api.ServiceEntry)) *api.ServiceEntry {
	e := &api.ServiceEntry{
		Node: &api.Node{Node: "node-1", Address: "10.0.0.1"},
		Service: &api.AgentService{ID: id, Service: "llm", Address: "10.0.0.5", Port: 8000,
			Tags: []string{"model=m"}, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
		Checks: api.HealthChecks{
			{CheckID: "serfHealth", Status: api.HealthPassing},
			{CheckID: "service:" + id, ServiceID: id, Status: api.HealthPassing},
		},
	}
	if edit != nil {
		edit(e)
	}
	return e
}

func maintCheck(id, status string) *api.HealthCheck {
	return &api.HealthCheck{CheckID: id, Status: status}
}

func TestInstanceFromEntry(t *testing.T) {
	tests := []struct {
		name    string
		entry   *api.ServiceEntry
		want    discovery.Instance
		wantErr bool
	}{
		{
			name: "every field",
			entry: entry("gpu-a-0", func(e *api.ServiceEntry) {
				e.Service.Tags = []string{"primary", "model=llama-3.1-8b", "model=llama-3.1-8b:sql-lora", "model=llama-3.1-8b", "v1"}
				e.Service.Meta = map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192", "metrics_path": "/metrics"}
				e.Service.Weights.Passing = 3
			}),
			want: discovery.Instance{ID: "gpu-a-0", Address: "10.0.0.5:8000", Models: []string{"llama-3.1-8b", "llama-3.1-8b:sql-lora"},
				Meta: map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192", "metrics_path": "/metrics"}, Weight: 3},
		},
		{
			name:  "address falls back to the node's",
			entry: entry("a", func(e *api.ServiceEntry) { e.Service.Address = "" }),
			want:  discovery.Instance{ID: "a", Address: "10.0.0.1:8000", Models: []string{"m"}, Weight: 1},
		},
		{
			name:  "IPv6 address is bracketed",
			entry: entry("a", func(e *api.ServiceEntry) { e.Service.Address = "fd00::5" }),
			want:  discovery.Instance{ID: "a", Address: "[fd00::5]:8000", Models: []string{"m"}, Weight: 1},
		},
		{
			name:  "weight 0 stays 0 (the default, 1)",
			entry: entry("a", func(e *api.ServiceEntry) { e.Service.Weights.Passing = 0 }),
			want:  discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}},
		},
		{
			name: "draining meta marks draining and leaves meta",
			entry: entry("a", func(e *api.ServiceEntry) {
				e.Service.Meta = map[string]string{"engine": "sglang", "draining": "true"}
			}),
			want: discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}, Weight: 1,
				Meta: map[string]string{"engine": "sglang"}, Draining: true},
		},
		{
			name:  "draining=false alone leaves no meta",
			entry: entry("a", func(e *api.ServiceEntry) { e.Service.Meta = map[string]string{"draining": "false"} }),
			want:  discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}, Weight: 1},
		},
		{
			name: "service maintenance marks draining",
			entry: entry("a", func(e *api.ServiceEntry) {
				e.Checks = append(e.Checks, maintCheck("_service_maintenance:a", api.HealthCritical))
			}),
			want: discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}, Weight: 1, Draining: true},
		},
		{
			name: "node maintenance marks draining",
			entry: entry("a", func(e *api.ServiceEntry) {
				e.Checks = append(e.Checks, maintCheck("_node_maintenance", api.HealthCritical))
			}),
			want: discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}, Weight: 1, Draining: true},
		},
		{
			name: "another service's maintenance does not",
			entry: entry("a", func(e *api.ServiceEntry) {
				e.Checks = append(e.Checks, maintCheck("_service_maintenance:b", api.HealthCritical))
			}),
			want: discovery.Instance{ID: "a", Address: "10.0.0.5:8000", Models: []string{"m"}, Weight: 1},
		},
		{name: "draining meta not a boolean", entry: entry("a", func(e *api.ServiceEntry) { e.Service.Meta = map[string]string{"draining": "soon"} }), wantErr: true},
		{name: "no model tag", entry: entry("a", func(e *api.ServiceEntry) { e.Service.Tags = []string{"primary"} }), wantErr: true},
		{name: "empty model tag", entry: entry("a", func(e *api.ServiceEntry) { e.Service.Tags = []string{"model="} }), wantErr: true},
		{name: "no port", entry: entry("a", func(e *api.ServiceEntry) { e.Service.Port = 0 }), wantErr: true},
		{name: "no address anywhere", entry: entry("a", func(e *api.ServiceEntry) { e.Service.Address, e.Node.Address = "", "" }), wantErr: true},
		{name: "id with a space", entry: entry("a b", nil), wantErr: true},
		{name: "no service", entry: &api.ServiceEntry{Node: &api.Node{Node: "n"}}, wantErr: true},
		{name: "nil entry", entry: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := instanceFromEntry(tt.entry)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidValue) {
					t.Fatalf("error = %v, want ErrInvalidValue; instance %+v", err, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("instance (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInstanceFromEntryDoesNotShareMeta(t *testing.T) {
	e := entry("a", func(e *api.ServiceEntry) { e.Service.Meta = map[string]string{"zone": "a", "draining": "false"} })
	in, err := instanceFromEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	in.Meta["zone"] = "changed"
	if e.Service.Meta["zone"] != "a" || e.Service.Meta["draining"] != "false" {
		t.Fatalf("the entry's meta was modified: %v", e.Service.Meta)
	}
}

func TestInstancesFromEntries(t *testing.T) {
	onNode := func(node string) func(*api.ServiceEntry) {
		return func(e *api.ServiceEntry) { e.Node.Node = node }
	}
	tests := []struct {
		name         string
		entries      []*api.ServiceEntry
		wantIDs      []string
		wantProblems []string
	}{
		{name: "none", entries: nil, wantIDs: nil},
		{name: "sorted by id", entries: []*api.ServiceEntry{entry("c", nil), entry("a", nil), entry("b", nil)}, wantIDs: []string{"a", "b", "c"}},
		{
			name:         "invalid entries are left out and reported",
			entries:      []*api.ServiceEntry{entry("a", nil), entry("bad", func(e *api.ServiceEntry) { e.Service.Tags = nil }), nil},
			wantIDs:      []string{"a"},
			wantProblems: []string{"@", "bad@node-1"},
		},
		{
			name:         "a duplicate id on another node: the first node by name wins",
			entries:      []*api.ServiceEntry{entry("a", onNode("node-b")), entry("a", onNode("node-a")), entry("b", onNode("node-b"))},
			wantIDs:      []string{"a", "b"},
			wantProblems: []string{"a@node-b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, order := range [][]*api.ServiceEntry{tt.entries, reversed(tt.entries)} {
				got, problems := instancesFromEntries(order)
				var ids, keys []string
				for _, in := range got {
					ids = append(ids, in.ID)
				}
				for _, p := range problems {
					keys = append(keys, p.key)
					if !errors.Is(p.err, ErrInvalidValue) {
						t.Errorf("problem %s: %v does not wrap ErrInvalidValue", p.key, p.err)
					}
				}
				slices.Sort(keys)
				if diff := cmp.Diff(tt.wantIDs, ids); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tt.wantProblems, keys); diff != "" {
					t.Errorf("problems (-want +got):\n%s", diff)
				}
				if _, err := discovery.NewSnapshot(SourceName, got, time.Time{}); err != nil {
					t.Errorf("output is not a valid snapshot: %v", err)
				}
			}
		})
	}
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}
