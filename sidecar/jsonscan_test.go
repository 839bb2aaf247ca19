package sidecar

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScanBody(t *testing.T) {
	deep := func(n int) string { return `{"a":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `,"model":"m"}` }
	deepObj := func(n int) string {
		return `{"model":"m","a":` + strings.Repeat(`{"b":`, n) + "1" + strings.Repeat("}", n) + "}"
	}
	tests := []struct {
		name     string
		body     string
		wantErr  bool
		model    string // decoded; "" with noModel means none
		noModel  bool
		cacheKey string
		user     string
	}{
		{name: "minimal", body: `{"model":"m1"}`, model: "m1"},
		{name: "white space everywhere", body: " \t\r\n{ \"model\" \t:\n \"m1\" \r\n} \n", model: "m1"},
		{name: "empty object", body: `{}`, noModel: true},
		{name: "no model", body: `{"messages":[{"role":"user","content":"model"}]}`, noModel: true},
		{name: "model only nested", body: `{"x":{"model":"inner"},"y":[{"model":"inner"}]}`, noModel: true},
		{name: "nested before model", body: `{"messages":[{"role":"user","content":[{"type":"text","text":"}{]["}]}],"tools":{"a":{"b":[1,2,{"c":null}]}},"model":"m1"}`, model: "m1"},
		{name: "escaped model", body: `{"model":"org\/llama\u002dlora \"q\""}`, model: `org/llama-lora "q"`},
		{name: "escaped key", body: `{"mod\u0065l":"m1"}`, model: "m1"},
		{name: "escaped quote in a string before model", body: `{"prompt":"say \"model\": \\","model":"m1"}`, model: "m1"},
		{name: "duplicate model: last wins", body: `{"model":"a","model":"b"}`, model: "b"},
		{name: "duplicate model: last is not a string", body: `{"model":"a","model":null}`, noModel: true},
		{name: "model not a string", body: `{"model":42}`, noModel: true},
		{name: "model is an array", body: `{"model":["m1"]}`, noModel: true},
		{name: "model is true", body: `{"model":true}`, noModel: true},
		{name: "empty model", body: `{"model":""}`, model: ""},
		{name: "unicode model", body: `{"model":"модель-✓"}`, model: "модель-✓"},
		{name: "affinity keys", body: `{"user":"u-1","model":"m","prompt_cache_key":"pk"}`, model: "m", cacheKey: "pk", user: "u-1"},
		{name: "affinity keys not strings", body: `{"user":7,"model":"m","prompt_cache_key":{}}`, model: "m"},
		{name: "numbers and literals", body: `{"a":-1.5e+10,"b":0,"c":true,"d":false,"e":null,"model":"m"}`, model: "m"},
		{name: "nesting at the bound", body: deep(maxDepth - 1), model: "m"},
		{name: "objects nested at the bound", body: deepObj(maxDepth - 1), model: "m"},

		{name: "empty", body: ``, wantErr: true},
		{name: "only space", body: "  \n", wantErr: true},
		{name: "array", body: `[{"model":"m1"}]`, wantErr: true},
		{name: "string", body: `"model"`, wantErr: true},
		{name: "null", body: `null`, wantErr: true},
		{name: "trailing garbage", body: `{"model":"m1"}x`, wantErr: true},
		{name: "two objects", body: `{"model":"m1"}{"model":"m2"}`, wantErr: true},
		{name: "trailing comma", body: `{"model":"m1",}`, wantErr: true},
		{name: "missing colon", body: `{"model" "m1"}`, wantErr: true},
		{name: "unquoted key", body: `{model:"m1"}`, wantErr: true},
		{name: "single quotes", body: `{'model':'m1'}`, wantErr: true},
		{name: "unterminated string", body: `{"model":"m1}`, wantErr: true},
		{name: "escape at the end", body: `{"model":"m1\`, wantErr: true},
		{name: "unterminated object", body: `{"model":"m1"`, wantErr: true},
		{name: "unbalanced array", body: `{"a":[1,2,"model":"m1"}`, wantErr: true},
		{name: "control character in a string", body: "{\"model\":\"m\n1\"}", wantErr: true},
		{name: "bad literal", body: `{"a":nul,"model":"m"}`, wantErr: true},
		{name: "bare word", body: `{"a":nope,"model":"m"}`, wantErr: true},
		{name: "too deep", body: deep(maxDepth), wantErr: true},
		{name: "objects too deep", body: deepObj(maxDepth), wantErr: true},
		{name: "hostile depth", body: `{"a":` + strings.Repeat("[", 1<<20), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f bodyFields
			err := scanBody([]byte(tt.body), &f)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("scanBody accepted %.80q", tt.body)
				}
				return
			}
			if err != nil {
				t.Fatalf("scanBody(%.80q) = %v", tt.body, err)
			}
			model, ok := stringValue(f.model)
			if tt.noModel {
				if ok || f.model != nil {
					t.Errorf("model = %q, want none", f.model)
				}
				return
			}
			if !ok || string(model) != tt.model {
				t.Errorf("model = %q (ok %v), want %q", model, ok, tt.model)
			}
			if got, _ := stringValue(f.promptCacheKey); string(got) != tt.cacheKey {
				t.Errorf("prompt_cache_key = %q, want %q", got, tt.cacheKey)
			}
			if got, _ := stringValue(f.user); string(got) != tt.user {
				t.Errorf("user = %q, want %q", got, tt.user)
			}
			// Whatever json accepts, json must agree on the model.
			if json.Valid([]byte(tt.body)) {
				var want struct{ Model string }
				_ = json.Unmarshal([]byte(tt.body), &want)
				if want.Model != string(model) {
					t.Errorf("encoding/json reads model %q, scanBody %q", want.Model, model)
				}
			}
		})
	}
}

// FuzzScanBody checks that scanBody never panics and agrees with
// encoding/json on every body that json decodes as an object with a string
// "model": the sidecar must route on the model the engine will read.
func FuzzScanBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"m1"}`,
		`{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"mod\u0065l":"m1"}`,
		`{"model":"a","model":"b"}`,
		`{"model":"org\/x\ud83d\ude00"}`,
		`{"a":[[[{"b":-1.5e3}]]],"model":"m","user":"u"}`,
		`{"model":"m1"} x`,
		`[1]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var fields bodyFields
		err := scanBody(data, &fields)
		model, ok := stringValue(fields.model)
		// encoding/json turns invalid UTF-8 into U+FFFD while the sidecar
		// routes on the raw bytes (which then match no model id), and json
		// nests deeper than maxDepth: compare only where both apply.
		if !utf8.Valid(data) || bytes.Count(data, []byte("{"))+bytes.Count(data, []byte("[")) >= maxDepth {
			return
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(data, &top) != nil || top == nil {
			return
		}
		raw, found := top["model"]
		var want string
		if !found || len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &want) != nil {
			if err == nil && fields.model != nil {
				t.Fatalf("%q: json finds no string model, scanBody finds %q", data, fields.model)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: json decodes model %q, scanBody fails: %v", data, want, err)
		}
		if !ok || string(model) != want {
			t.Fatalf("%q: json decodes model %q, scanBody %q (ok %v)", data, want, model, ok)
		}
	})
}

// bodyOfSize returns a chat request of about n bytes whose "model" key is
// last, so that finding it means scanning the whole body.
func bodyOfSize(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	for i := 0; b.Len() < n-64; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"role":"user","content":"The quick brown fox jumps over the \"lazy\" dog.\nAgain!"}`)
	}
	b.WriteString(`],"temperature":0.7,"stream":true,"model":"llama-3.1-8b"}`)
	return b.Bytes()
}

func BenchmarkScanBody(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1KB", 1 << 10}, {"256KB", 256 << 10}} {
		body := bodyOfSize(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var f bodyFields
			for b.Loop() {
				f = bodyFields{}
				if err := scanBody(body, &f); err != nil {
					b.Fatal(err)
				}
				if m, ok := stringValue(f.model); !ok || string(m) != "llama-3.1-8b" {
					b.Fatalf("model %q", m)
				}
			}
		})
	}
}
