package consul

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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
		if err := validateLoadReport(r); err != nil {
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
