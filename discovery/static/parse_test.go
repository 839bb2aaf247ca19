package static

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []discovery.Instance
	}{
		{
			name: "yaml",
			in: `
- id: gpu-a
  address: 10.0.0.5:8000
  models: [llama, "llama:sql-lora"]
- id: gpu-b
  address: "[fd00::1]:8000"
  models:
    - qwen
`,
			want: []discovery.Instance{
				{ID: "gpu-a", Address: "10.0.0.5:8000", Models: []string{"llama", "llama:sql-lora"}},
				{ID: "gpu-b", Address: "[fd00::1]:8000", Models: []string{"qwen"}},
			},
		},
		{
			name: "json",
			in: `[{"id":"gpu-a-0","address":"10.0.0.5:8000","models":["llama-3.1-8b"],
			      "meta":{"engine":"vllm","zone":"a"},"weight":3,"draining":true}]`,
			want: []discovery.Instance{{
				ID: "gpu-a-0", Address: "10.0.0.5:8000", Models: []string{"llama-3.1-8b"},
				Meta: map[string]string{"engine": "vllm", "zone": "a"}, Weight: 3, Draining: true,
			}},
		},
		{
			// Absent weight stays 0 (EffectiveWeight gives 1): nothing is
			// silently rewritten, so the JSON form round-trips.
			name: "weight default",
			in:   "- {id: a, address: 'h:1', models: [m]}\n",
			want: []discovery.Instance{{ID: "a", Address: "h:1", Models: []string{"m"}}},
		},
		{
			name: "meta scalars become strings",
			in:   "- {id: a, address: 'h:1', models: [m], meta: {engine: vllm, max_model_len: 8192, lora: true}}\n",
			want: []discovery.Instance{{ID: "a", Address: "h:1", Models: []string{"m"},
				Meta: map[string]string{"engine": "vllm", "max_model_len": "8192", "lora": "true"}}},
		},
		{
			name: "empty meta is nil",
			in:   "- {id: a, address: 'h:1', models: [m], meta: {}}\n",
			want: []discovery.Instance{{ID: "a", Address: "h:1", Models: []string{"m"}}},
		},
		{
			name: "draining",
			in:   "- {id: a, address: 'h:1', models: [m], draining: true}\n",
			want: []discovery.Instance{{ID: "a", Address: "h:1", Models: []string{"m"}, Draining: true}},
		},
		{
			name: "file order kept",
			in:   "- {id: z, address: 'h:1', models: [m]}\n- {id: a, address: 'h:2', models: [m]}\n",
			want: []discovery.Instance{
				{ID: "z", Address: "h:1", Models: []string{"m"}},
				{ID: "a", Address: "h:2", Models: []string{"m"}},
			},
		},
		{
			name: "anchors and merge keys",
			in: `
- &base {id: a, address: 'h:1', models: [m], meta: {zone: a}}
- <<: *base
  id: b
`,
			want: []discovery.Instance{
				{ID: "a", Address: "h:1", Models: []string{"m"}, Meta: map[string]string{"zone": "a"}},
				{ID: "b", Address: "h:1", Models: []string{"m"}, Meta: map[string]string{"zone": "a"}},
			},
		},
		{name: "explicit empty list", in: "[]\n", want: []discovery.Instance{}},
		{name: "empty list with comments", in: "# nothing serves yet\n[]\n", want: []discovery.Instance{}},
		{name: "byte order mark", in: "\ufeff- {id: a, address: 'h:1', models: [m]}", want: []discovery.Instance{
			{ID: "a", Address: "h:1", Models: []string{"m"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		is     error    // nil: no sentinel to check
		substr []string // each must appear in the message
	}{
		{"missing id", "- {address: 'h:1', models: [m]}", discovery.ErrInvalidInstance,
			[]string{"entry 0 (line 1)", "id: required"}},
		{"bad address", "- {id: gpu-a, address: 'h:1', models: [m]}\n- {id: gpu-b, address: x, models: [m]}",
			discovery.ErrInvalidInstance, []string{`entry 1 (id "gpu-b", line 2)`, "address", `"x"`, "missing port"}},
		{"bad port", "- {id: a, address: 'h:0', models: [m]}", discovery.ErrInvalidInstance,
			[]string{`entry 0 (id "a"`, "port"}},
		{"no models", "- {id: a, address: 'h:1'}", discovery.ErrInvalidInstance,
			[]string{`entry 0 (id "a"`, "models"}},
		{"empty model", "- {id: a, address: 'h:1', models: [m, '']}", discovery.ErrInvalidInstance,
			[]string{"models[1]"}},
		{"models not a list", "- {id: a, address: 'h:1', models: 5}", nil,
			[]string{`entry 0 (id "a", line 1)`, "line 1", "[]string"}},
		{"duplicate id", "- {id: a, address: 'h:1', models: [m]}\n- {id: b, address: 'h:2', models: [m]}\n- {id: a, address: 'h:3', models: [m]}",
			discovery.ErrDuplicateID, []string{`entry 2 (id "a", line 3)`, "first at entry 0 (line 1)"}},
		{"unknown field", "- id: a\n  address: 'h:1'\n  modles: [m]\n  models: [m]\n", ErrUnknownField,
			[]string{`entry 0 (id "a", line 1)`, `"modles" at line 3`}},
		{"unknown field through merge", "- &x {id: a, address: 'h:1', models: [m], zone: a}\n", ErrUnknownField,
			[]string{`"zone"`}},
		{"duplicate key", "- {id: a, id: b, address: 'h:1', models: [m]}", nil,
			[]string{"entry 0", `mapping key "id" already defined`}},
		{"negative weight", "- {id: a, address: 'h:1', models: [m], weight: -1}", discovery.ErrInvalidInstance,
			[]string{`entry 0 (id "a"`, "weight -1"}},
		// yaml.v3 alone would truncate 1.5 to 1.
		{"fractional weight", "- {id: a, address: 'h:1', models: [m], weight: 1.5}", nil,
			[]string{`entry 0 (id "a", line 1)`, "weight 1.5 at line 1", "whole number"}},
		{"fractional weight through merge", "- &x {id: a, address: 'h:1', models: [m], weight: 2.0}\n- {<<: *x, id: b}", nil,
			[]string{"entry 0", "weight 2.0"}},
		{"weight not a number", "- {id: a, address: 'h:1', models: [m], weight: heavy}", nil,
			[]string{`entry 0 (id "a"`, "cannot unmarshal", "int"}},
		{"meta not scalar", "- {id: a, address: 'h:1', models: [m], meta: {zone: [a]}}", nil,
			[]string{`entry 0 (id "a"`, "cannot unmarshal"}},
		{"meta empty key", "- {id: a, address: 'h:1', models: [m], meta: {'': x}}", discovery.ErrInvalidInstance,
			[]string{"meta: empty key"}},
		{"id with slash", "- {id: a/b, address: 'h:1', models: [m]}", discovery.ErrInvalidInstance,
			[]string{"id", "a/b"}},
		{"entry not an object", "- {id: a, address: 'h:1', models: [m]}\n- gpu-b\n", nil,
			[]string{"entry 1 (line 2)", "not an instance object", `"gpu-b"`}},
		{"null entry", "- {id: a, address: 'h:1', models: [m]}\n-\n", nil,
			[]string{"entry 1", "not an instance object", "null"}},
		{"empty document", "", ErrEmpty, nil},
		{"only white space", "  \n\t\n", ErrEmpty, nil},
		{"only comments", "# half-written\n# file\n", ErrEmpty, nil},
		{"document marker only", "---\n", ErrEmpty, nil},
		{"null", "null\n", ErrEmpty, nil},
		{"not a list: mapping", "id: a\naddress: 'h:1'\nmodels: [m]\n", ErrNotList, []string{"a mapping", "line 1"}},
		{"not a list: json object", `{"id":"a","address":"h:1","models":["m"]}`, ErrNotList, []string{"a mapping"}},
		{"not a list: scalar", "gpu-a\n", ErrNotList, []string{`"gpu-a"`}},
		{"two documents", "[]\n---\n- {id: a}\n", ErrMultipleDocuments, []string{"line 2"}},
		{"syntax error", "- {id: a, address: 'h:1'\n", nil, []string{"yaml:", "line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse = %v, want an error", got)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "static: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", msg, tt.is)
			}
			for _, s := range tt.substr {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not contain %q", msg, s)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	snap, err := Load(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if snap.Source != SourceName || snap.SyncedAt.IsZero() || snap.Stale {
		t.Errorf("snapshot header = %q %v stale=%v", snap.Source, snap.SyncedAt, snap.Stale)
	}
	if diff := cmp.Diff([]string{"gpu-a-0", "gpu-a-1", "gpu-b-0"}, ids(snap)); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	models := map[string]bool{}
	for _, in := range snap.Instances {
		for _, m := range in.Models {
			models[m] = true
		}
		if in.Meta["engine"] == "" || in.Meta["zone"] == "" {
			t.Errorf("instance %s lacks meta engine/zone: %v", in.ID, in.Meta)
		}
	}
	if len(models) != 2 {
		t.Errorf("models = %v, want two", models)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("- {id: a, address: x, models: [m]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		is     error
		substr string
	}{
		{"missing", filepath.Join(dir, "nope.yaml"), os.ErrNotExist, "nope.yaml"},
		{"directory", dir, nil, "not a regular file"},
		{"invalid names the path and entry", bad, discovery.ErrInvalidInstance, bad + ": entry 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), "static: ") || !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q: want prefix %q and %q", err, "static: ", tt.substr)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
		})
	}
}

func ids(s discovery.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}
