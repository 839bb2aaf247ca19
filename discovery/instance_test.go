package discovery_test

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/blitzscale/router/discovery"
)

// validInstance returns a minimal valid instance for tests to break.
func validInstance() discovery.Instance {
	return discovery.Instance{ID: "gpu-a-0", Address: "10.0.0.5:8000", Models: []string{"llama-3.1-8b"}}
}

func TestInstanceValidate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*discovery.Instance)
		substr []string // nil: valid; else each must appear in the error
	}{
		{"minimal", func(*discovery.Instance) {}, nil},
		{"full", func(in *discovery.Instance) {
			in.Models = append(in.Models, "llama-3.1-8b:sql-lora")
			in.Meta = map[string]string{"engine": "vllm", "zone": "a"}
			in.Weight, in.Draining = 3, true
		}, nil},
		{"host name", func(in *discovery.Instance) { in.Address = "gpu-a.internal:8000" }, nil},
		{"ipv6", func(in *discovery.Instance) { in.Address = "[fd00::1]:8000" }, nil},
		{"highest port", func(in *discovery.Instance) { in.Address = "h:65535" }, nil},
		{"empty meta value", func(in *discovery.Instance) { in.Meta = map[string]string{"zone": ""} }, nil},
		{"missing id", func(in *discovery.Instance) { in.ID = "" }, []string{"id: required"}},
		{"id with slash", func(in *discovery.Instance) { in.ID = "a/b" }, []string{`id "a/b"`, "'/'"}},
		{"id with space", func(in *discovery.Instance) { in.ID = "a b" }, []string{`id "a b"`, "white space"}},
		{"id with newline", func(in *discovery.Instance) { in.ID = "a\n" }, []string{"id", "white space"}},
		{"missing address", func(in *discovery.Instance) { in.Address = "" }, []string{`instance "gpu-a-0"`, "address", "required"}},
		{"address without port", func(in *discovery.Instance) { in.Address = "10.0.0.5" }, []string{"address", `"10.0.0.5"`, "missing port"}},
		{"address without host", func(in *discovery.Instance) { in.Address = ":8000" }, []string{"address", "missing host"}},
		{"port zero", func(in *discovery.Instance) { in.Address = "h:0" }, []string{"address", "1-65535"}},
		{"port too high", func(in *discovery.Instance) { in.Address = "h:65536" }, []string{"address", "1-65535"}},
		{"port by name", func(in *discovery.Instance) { in.Address = "h:http" }, []string{"address", "1-65535"}},
		{"url instead of address", func(in *discovery.Instance) { in.Address = "http://h:8000" }, []string{"address"}},
		{"no models", func(in *discovery.Instance) { in.Models = nil }, []string{`instance "gpu-a-0"`, "models", "at least one"}},
		{"empty model", func(in *discovery.Instance) { in.Models = []string{"m", ""} }, []string{"models[1]", "empty"}},
		{"blank model", func(in *discovery.Instance) { in.Models = []string{" \t"} }, []string{"models[0]"}},
		{"negative weight", func(in *discovery.Instance) { in.Weight = -1 }, []string{"weight -1", "0 means 1"}},
		{"empty meta key", func(in *discovery.Instance) { in.Meta = map[string]string{"": "x"} }, []string{"meta", "empty key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := validInstance()
			tt.edit(&in)
			err := in.Validate()
			if tt.substr == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil, want an error")
			}
			if !errors.Is(err, discovery.ErrInvalidInstance) {
				t.Errorf("error %q is not ErrInvalidInstance", err)
			}
			for _, s := range tt.substr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestInstanceEffectiveWeightAndServes(t *testing.T) {
	in := validInstance()
	if got := in.EffectiveWeight(); got != discovery.DefaultWeight {
		t.Errorf("EffectiveWeight of weight 0 = %d, want %d", got, discovery.DefaultWeight)
	}
	in.Weight = 4
	if got := in.EffectiveWeight(); got != 4 {
		t.Errorf("EffectiveWeight = %d, want 4", got)
	}
	if !in.Serves("llama-3.1-8b") || in.Serves("llama") || in.Serves("") {
		t.Errorf("Serves matches other than exactly %v", in.Models)
	}
}

func TestDecodeInstance(t *testing.T) {
	tests := []struct {
		name   string
		data   string
		want   discovery.Instance
		substr string // "" means success
	}{
		{
			name: "design example",
			data: `{"id":"gpu-a-0","address":"10.0.0.5:8000","models":["llama-3.1-8b","llama-3.1-8b:sql-lora"],
			        "meta":{"engine":"vllm","zone":"a","max_model_len":"8192"},"weight":1,"draining":false}`,
			want: discovery.Instance{ID: "gpu-a-0", Address: "10.0.0.5:8000",
				Models: []string{"llama-3.1-8b", "llama-3.1-8b:sql-lora"},
				Meta:   map[string]string{"engine": "vllm", "zone": "a", "max_model_len": "8192"}, Weight: 1},
		},
		{
			name: "optional fields absent",
			data: `{"id":"a","address":"h:1","models":["m"]}`,
			want: discovery.Instance{ID: "a", Address: "h:1", Models: []string{"m"}},
		},
		{
			// Newer registrants may add attributes; older sidecars must
			// still read them.
			name: "unknown fields ignored",
			data: `{"id":"a","address":"h:1","models":["m"],"gpu":"h100","labels":{"x":1}}`,
			want: discovery.Instance{ID: "a", Address: "h:1", Models: []string{"m"}},
		},
		{
			name: "trailing white space",
			data: "{\"id\":\"a\",\"address\":\"h:1\",\"models\":[\"m\"]}\n\t ",
			want: discovery.Instance{ID: "a", Address: "h:1", Models: []string{"m"}},
		},
		{name: "second object", data: `{"id":"a","address":"h:1","models":["m"]} {"id":"b"}`, substr: "trailing data"},
		{name: "trailing garbage", data: `{"id":"a","address":"h:1","models":["m"]}x`, substr: "trailing data"},
		{name: "trailing brace", data: `{"id":"a","address":"h:1","models":["m"]}}`, substr: "trailing data"},
		{name: "control character in model", data: `{"id":"a","address":"h:1","models":["m\u0007"]}`, substr: "models[0]"},
		{name: "empty", data: "", substr: "EOF"},
		{name: "not json", data: "id: a", substr: "invalid"},
		{name: "array", data: `[{"id":"a"}]`, substr: "cannot unmarshal array"},
		{name: "null", data: "null", substr: "id: required"},
		{name: "wrong type", data: `{"id":"a","address":"h:1","models":"m"}`, substr: "models"},
		{name: "invalid instance", data: `{"id":"a","address":"h","models":["m"]}`, substr: "address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := discovery.DecodeInstance([]byte(tt.data))
			if tt.substr == "" {
				if err != nil {
					t.Fatalf("DecodeInstance: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("DecodeInstance (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil {
				t.Fatalf("DecodeInstance = %+v, want an error", got)
			}
			if !errors.Is(err, discovery.ErrInvalidInstance) {
				t.Errorf("error %q is not ErrInvalidInstance", err)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not contain %q", err, tt.substr)
			}
		})
	}
}

func TestEncodeInstance(t *testing.T) {
	in := validInstance()
	data, err := discovery.EncodeInstance(in)
	if err != nil {
		t.Fatalf("EncodeInstance: %v", err)
	}
	// Defaults are omitted so a registry value stays minimal.
	if want := `{"id":"gpu-a-0","address":"10.0.0.5:8000","models":["llama-3.1-8b"]}`; string(data) != want {
		t.Errorf("EncodeInstance = %s, want %s", data, want)
	}

	in.Meta, in.Weight, in.Draining = map[string]string{"zone": "a"}, 2, true
	data, err = discovery.EncodeInstance(in)
	if err != nil {
		t.Fatalf("EncodeInstance: %v", err)
	}
	back, err := discovery.DecodeInstance(data)
	if err != nil {
		t.Fatalf("DecodeInstance(EncodeInstance): %v", err)
	}
	if diff := cmp.Diff(in, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	var generic map[string]any
	if err := json.Unmarshal(data, &generic); err != nil || generic["draining"] != true {
		t.Errorf("encoded %s: draining not true (%v)", data, err)
	}

	if _, err := discovery.EncodeInstance(discovery.Instance{ID: "a"}); !errors.Is(err, discovery.ErrInvalidInstance) {
		t.Errorf("EncodeInstance of an invalid instance: err = %v, want ErrInvalidInstance", err)
	}
}

func TestInstanceEqual(t *testing.T) {
	base := discovery.Instance{ID: "a", Address: "10.0.0.1:8000", Models: []string{"m1", "m2"}, Meta: map[string]string{"zone": "z1"}, Weight: 2}
	tests := []struct {
		name string
		edit func(in *discovery.Instance)
		want bool
	}{
		{name: "same", edit: func(*discovery.Instance) {}, want: true},
		{name: "meta dropped", edit: func(in *discovery.Instance) { in.Meta = nil }},
		{name: "address", edit: func(in *discovery.Instance) { in.Address = "10.0.0.2:8000" }},
		{name: "model order", edit: func(in *discovery.Instance) { in.Models = []string{"m2", "m1"} }},
		{name: "meta value", edit: func(in *discovery.Instance) { in.Meta = map[string]string{"zone": "z2"} }},
		{name: "weight", edit: func(in *discovery.Instance) { in.Weight = 1 }},
		{name: "draining", edit: func(in *discovery.Instance) { in.Draining = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			o.Meta = maps.Clone(base.Meta)
			tt.edit(&o)
			if got := base.Equal(o); got != tt.want {
				t.Fatalf("Equal = %v, want %v", got, tt.want)
			}
		})
	}
}
