package discovery

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Moved from the etcd and Consul packages, which now both decode with
// DecodeLoadReport.
func TestDecodeLoadReport(t *testing.T) {
	tests := []struct {
		name, id, value string
		wantErr         bool
	}{
		{name: "valid", id: "s1", value: `{"sidecar_id":"s1","seq":3,"period_ms":2000,"instances":[{"id":"a","inflight":2}]}`},
		{name: "unknown fields are ignored", id: "s1", value: `{"sidecar_id":"s1","period_ms":2000,"future":true}`},
		{name: "id differs from key", id: "s2", value: `{"sidecar_id":"s1","period_ms":2000}`, wantErr: true},
		{name: "no period", id: "s1", value: `{"sidecar_id":"s1"}`, wantErr: true},
		{name: "negative period", id: "s1", value: `{"sidecar_id":"s1","period_ms":-5}`, wantErr: true},
		{name: "negative in-flight", id: "s1", value: `{"sidecar_id":"s1","period_ms":1,"instances":[{"id":"a","inflight":-1}]}`, wantErr: true},
		{name: "negative queued", id: "s1", value: `{"sidecar_id":"s1","period_ms":1,"instances":[{"id":"a","queued":{"low":-1}}]}`, wantErr: true},
		{name: "instance without id", id: "s1", value: `{"sidecar_id":"s1","period_ms":1,"instances":[{"inflight":1}]}`, wantErr: true},
		// A stray "}" passed etcd's old dec.More() check.
		{name: "trailing brace", id: "s1", value: `{"sidecar_id":"s1","period_ms":1}}`, wantErr: true},
		{name: "trailing object", id: "s1", value: `{"sidecar_id":"s1","period_ms":1} {}`, wantErr: true},
		{name: "not JSON", id: "s1", value: `load`, wantErr: true},
		{name: "empty", id: "s1", value: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeLoadReport(tt.id, []byte(tt.value))
			if tt.wantErr != (err != nil) {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidLoadReport) {
				t.Errorf("error %v does not wrap ErrInvalidLoadReport", err)
			}
		})
	}
}

func TestEncodeLoadReport(t *testing.T) {
	tests := []struct {
		name        string
		r           LoadReport
		wantErr     bool
		wantInvalid bool
	}{
		{name: "id filled in", r: LoadReport{PeriodMillis: 1000}},
		{name: "own id", r: LoadReport{SidecarID: "s1", PeriodMillis: 1000}},
		{name: "other id", r: LoadReport{SidecarID: "s2", PeriodMillis: 1000}, wantErr: true, wantInvalid: true},
		{name: "no period", r: LoadReport{}, wantErr: true, wantInvalid: true},
		{name: "NaN latency", r: LoadReport{PeriodMillis: 1, Instances: []InstanceLoad{{ID: "a", TTFTMillis: math.NaN()}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := EncodeLoadReport("s1", tt.r)
			if tt.wantErr != (err != nil) || tt.wantInvalid != errors.Is(err, ErrInvalidLoadReport) {
				t.Fatalf("error = %v, want error %v (invalid %v)", err, tt.wantErr, tt.wantInvalid)
			}
			if err != nil {
				return
			}
			// What a publisher writes, a reader accepts under the same key.
			if _, err := DecodeLoadReport("s1", v); err != nil {
				t.Fatalf("decoding %s: %v", v, err)
			}
		})
	}
}

// FuzzDecodeLoadReport: no input panics the decoder, and what it accepts
// survives a round trip through the encoding publishers use.
func FuzzDecodeLoadReport(f *testing.F) {
	f.Add("s1", []byte(`{"sidecar_id":"s1","seq":3,"period_ms":2000,"instances":[{"id":"a","inflight":2,"queued":{"high":1}}]}`))
	f.Add("s1", []byte(`{"sidecar_id":"s1","period_ms":1}}`))
	f.Add("s2", []byte(`{"sidecar_id":"s2","period_ms":-5}`))
	f.Add("", []byte(`{}`))
	f.Fuzz(func(t *testing.T, id string, value []byte) {
		r, err := DecodeLoadReport(id, value)
		if err != nil {
			return
		}
		if err := ValidateLoadReport(r); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		v, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeLoadReport(id, v)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", v, err)
		}
		if diff := cmp.Diff(r, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
