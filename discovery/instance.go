package discovery

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Instance is one inference server (vLLM, SGLang, TGI or any
// OpenAI-compatible engine) as a registry describes it. The JSON form is the
// registry contract of DESIGN.md; the YAML tags serve the static file.
type Instance struct {
	// ID names the instance uniquely within a service. Required; no '/'
	// because it is the last segment of a registry key.
	ID string `json:"id" yaml:"id"`
	// Address is host:port of the engine's OpenAI-compatible HTTP server.
	Address string `json:"address" yaml:"address"`
	// Models lists the model ids (and adapters, e.g. "base:lora") served.
	Models []string `json:"models" yaml:"models"`
	// Meta holds scalar attributes such as engine, zone, max_model_len.
	Meta map[string]string `json:"meta,omitempty" yaml:"meta,omitempty"`
	// Weight scales the instance's share of load. Zero means the default, 1.
	Weight int `json:"weight,omitempty" yaml:"weight,omitempty"`
	// Draining takes the instance out of new routing; open streams finish.
	Draining bool `json:"draining,omitempty" yaml:"draining,omitempty"`
}

// DefaultWeight is the weight of an instance that states none.
const DefaultWeight = 1

// EffectiveWeight returns Weight, or DefaultWeight when it is zero.
func (in Instance) EffectiveWeight() int {
	if in.Weight == 0 {
		return DefaultWeight
	}
	return in.Weight
}

// Serves reports whether the instance serves model.
func (in Instance) Serves(model string) bool {
	for _, m := range in.Models {
		if m == model {
			return true
		}
	}
	return false
}

// Equal reports whether in and o describe the same instance field by
// field, Models in order and Meta as a set. Sources use it to send nothing
// when a registry answer changed nothing a consumer sees.
func (in Instance) Equal(o Instance) bool {
	return in.ID == o.ID && in.Address == o.Address && in.Weight == o.Weight && in.Draining == o.Draining &&
		slices.Equal(in.Models, o.Models) && maps.Equal(in.Meta, o.Meta)
}

// Validate checks the instance against the registry contract and returns an
// error that names the offending field.
func (in Instance) Validate() error {
	if in.ID == "" {
		return fmt.Errorf("%w: id: required", ErrInvalidInstance)
	}
	if strings.ContainsAny(in.ID, "/ \t\r\n") || hasControl(in.ID) {
		return fmt.Errorf("%w: id %q: must not contain '/' or white space", ErrInvalidInstance, in.ID)
	}
	if err := validateAddress(in.Address); err != nil {
		return fmt.Errorf("%w: instance %q: address: %v", ErrInvalidInstance, in.ID, err)
	}
	if len(in.Models) == 0 {
		return fmt.Errorf("%w: instance %q: models: at least one model is required", ErrInvalidInstance, in.ID)
	}
	for i, m := range in.Models {
		if strings.TrimSpace(m) == "" {
			return fmt.Errorf("%w: instance %q: models[%d]: empty model id", ErrInvalidInstance, in.ID, i)
		}
		if hasControl(m) {
			return fmt.Errorf("%w: instance %q: models[%d]: %q holds control characters", ErrInvalidInstance, in.ID, i, m)
		}
	}
	if in.Weight < 0 {
		return fmt.Errorf("%w: instance %q: weight %d: must be positive (0 means %d)", ErrInvalidInstance, in.ID, in.Weight, DefaultWeight)
	}
	for k, v := range in.Meta {
		if k == "" {
			return fmt.Errorf("%w: instance %q: meta: empty key", ErrInvalidInstance, in.ID)
		}
		if hasControl(k) || hasControl(v) {
			return fmt.Errorf("%w: instance %q: meta[%q]: control characters", ErrInvalidInstance, in.ID, k)
		}
	}
	return nil
}

// hasControl reports control characters and the noncharacters U+FFFE and
// U+FFFF: JSON can carry them but YAML cannot, and no name needs them.
func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == 0xfffe || r == 0xffff {
			return true
		}
	}
	return false
}

func validateAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("required (host:port)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %v", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q: missing host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1-65535", addr)
	}
	return nil
}

// DecodeInstance parses one registry value (JSON) into a valid Instance.
// Unknown fields are ignored so that newer registrants can add attributes
// without breaking older sidecars.
func DecodeInstance(data []byte) (Instance, error) {
	var in Instance
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&in); err != nil {
		return Instance{}, fmt.Errorf("%w: %v", ErrInvalidInstance, err)
	}
	// More() would miss a stray "}" or "]"; only EOF means nothing follows.
	if _, err := dec.Token(); err != io.EOF {
		return Instance{}, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalidInstance)
	}
	if err := in.Validate(); err != nil {
		return Instance{}, err
	}
	return in, nil
}

// EncodeInstance returns the registry value (JSON) of a valid instance.
func EncodeInstance(in Instance) ([]byte, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(in)
}
