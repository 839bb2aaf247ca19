package sidecar

import (
	"bytes"
	"encoding/json"
	"errors"
)

// errNotJSONObject is returned by scanBody for a body that is not a JSON
// object; the sidecar answers 400.
var errNotJSONObject = errors.New("sidecar: body is not a JSON object")

// bodyFields are the top-level request fields the sidecar routes on. Every
// slice points into the body: nothing is copied and nothing outlives it.
type bodyFields struct {
	// model is the raw JSON string of "model", quotes included, or nil.
	model []byte
	// promptCacheKey and user are raw JSON strings (quotes included): the
	// affinity keys a client gives without the X-Blitz-Session header.
	promptCacheKey []byte
	user           []byte
	// prompt is the raw value of messages, prompt or input (whichever came
	// last): its leading bytes key prefix affinity.
	prompt []byte
}

// maxDepth bounds nesting so that a hostile body costs no more than a
// linear scan; engines reject deeper documents anyway.
const maxDepth = 512

// scanBody walks the top level of a JSON object once, without building maps
// or decoding values, and records the fields the router needs. It checks the
// structure (balanced containers, terminated strings, literals) but not every
// detail of number syntax: the engine parses the body in full. When a key
// repeats, the last one wins, as in Python's json and Go's encoding/json, so
// that the sidecar and the engine agree on the model.
func scanBody(b []byte, f *bodyFields) error {
	i := skipSpace(b, 0)
	end, err := walkObject(b, i, 0, f)
	if err != nil {
		return err
	}
	if skipSpace(b, end) != len(b) {
		return errNotJSONObject
	}
	return nil
}

// walkObject skips the object at b[i]; at depth 0 it records fields into f.
func walkObject(b []byte, i, depth int, f *bodyFields) (int, error) {
	if i >= len(b) || b[i] != '{' || depth >= maxDepth {
		return 0, errNotJSONObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, errNotJSONObject
		}
		kEnd, err := scanString(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i:kEnd]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, errNotJSONObject
		}
		i = skipSpace(b, i+1)
		vStart := i
		if i, err = skipValue(b, i, depth+1); err != nil {
			return 0, err
		}
		if f != nil {
			f.record(key, b[vStart:i])
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, errNotJSONObject
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, errNotJSONObject
		}
	}
}

func walkArray(b []byte, i, depth int) (int, error) {
	if depth >= maxDepth {
		return 0, errNotJSONObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipValue(b, i, depth+1); err != nil {
			return 0, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, errNotJSONObject
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return 0, errNotJSONObject
		}
	}
}

// skipValue returns the index after the JSON value that starts at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errNotJSONObject
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i)
	case c == '{':
		return walkObject(b, i, depth, nil)
	case c == '[':
		return walkArray(b, i, depth)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i), nil
	}
	return 0, errNotJSONObject
}

// record keeps the raw value of a key the router cares about. A key spelled
// with escapes ("mod\u0065l") is the same key to the engine's JSON parser,
// so it is decoded (rare, so its allocation does not matter); otherwise a
// body could route on one model and run another.
func (f *bodyFields) record(key, val []byte) {
	name := key[1 : len(key)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		var ok bool
		if name, ok = stringValue(key); !ok {
			return
		}
	}
	// Last key wins; a later non-string value clears an earlier string.
	var str []byte
	if len(val) >= 2 && val[0] == '"' {
		str = val
	}
	switch string(name) {
	case "model":
		f.model = str
	case "prompt_cache_key":
		f.promptCacheKey = str
	case "user":
		f.user = str
	case "messages", "prompt", "input":
		f.prompt = val
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the index after the closing quote of the string that
// starts at b[i] == '"'.
func scanString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, nil
		case c == '\\':
			j++
		case c < 0x20:
			return 0, errNotJSONObject
		}
	}
	return 0, errNotJSONObject
}

func literal(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, errNotJSONObject
	}
	return i + len(lit), nil
}

func skipNumber(b []byte, i int) int {
	for i < len(b) {
		switch c := b[i]; {
		case c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			i++
		default:
			return i
		}
	}
	return i
}

// stringValue returns the contents of a raw JSON string (quotes included)
// as bytes. A string without escapes is returned in place; one with escapes
// is decoded, which allocates, but model ids with escapes do not occur in
// practice.
func stringValue(raw []byte) ([]byte, bool) {
	if len(raw) < 2 {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, false
			}
			return []byte(s), true
		}
	}
	return inner, true
}
