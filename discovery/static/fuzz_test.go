package static

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks that Parse never panics, that every error carries the
// package prefix, and that whatever it accepts is valid, unique by id and
// survives the trip through JSON (the form etcd stores) unchanged. Seeds
// live in testdata/fuzz/FuzzParse; run with
// go test -fuzz=FuzzParse -fuzztime=30s ./discovery/static/
func FuzzParse(f *testing.F) {
	f.Add([]byte(fileOf("gpu-a", "gpu-b")))
	f.Fuzz(func(t *testing.T, data []byte) {
		ins, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "static: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		seen := map[string]bool{}
		for i, in := range ins {
			if err := in.Validate(); err != nil {
				t.Fatalf("accepted entry %d is invalid: %v", i, err)
			}
			if seen[in.ID] {
				t.Fatalf("accepted duplicate id %q", in.ID)
			}
			seen[in.ID] = true
		}
		js, err := json.Marshal(ins)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		again, err := Parse(yamlSafe(js))
		if err != nil {
			t.Fatalf("Parse(%s): %v", js, err)
		}
		if diff := cmp.Diff(ins, again); diff != "" {
			t.Fatalf("JSON round trip changed the instances (-first +second):\n%s\njson: %s", diff, js)
		}
	})
}

// yamlSafe rewrites JSON text so that YAML can read it. encoding/json writes
// DEL, the C1 controls and U+FFFE/U+FFFF raw, which a YAML stream must not
// contain (and YAML reads a raw U+0085 as a line break); Parse accepts them
// when a static file spells them as escapes. A \u escape means the same in
// both languages, and such runes only occur inside JSON strings.
func yamlSafe(js []byte) []byte {
	var b bytes.Buffer
	for _, r := range string(js) {
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0xfffe || r == 0xffff {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.Bytes()
}
