package static

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/blitzscale/router/discovery"
)

// SourceName is the Snapshot.Source of every snapshot this package builds.
const SourceName = "static"

// MaxFileSize bounds how much of a file Load and Source read (16 MiB), so
// that a path pointing at the wrong thing (a log, /dev/zero) cannot exhaust
// memory. A fleet of thousands of instances fits in a few hundred KiB.
const MaxFileSize = 16 << 20

// Parse decodes a static file's bytes into instances, in file order, each
// valid and with a unique id. See the package documentation for the format
// and the strictness rules. An explicit empty list returns zero instances
// and no error. Meta that is empty is returned as nil.
func Parse(data []byte) ([]discovery.Instance, error) {
	ins, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("static: %w", err)
	}
	return ins, nil
}

// Load reads and parses the file at path and returns a validated snapshot
// whose Source is "static" and whose SyncedAt is the time of the read.
func Load(path string) (discovery.Snapshot, error) {
	data, _, err := readFile(path)
	if err != nil {
		return discovery.Snapshot{}, fmt.Errorf("static: %w", err)
	}
	snap, err := snapshotOf(data, time.Now())
	if err != nil {
		return discovery.Snapshot{}, fmt.Errorf("static: %s: %w", path, err)
	}
	return snap, nil
}

// snapshotOf parses data into a snapshot; errors carry no package prefix.
func snapshotOf(data []byte, at time.Time) (discovery.Snapshot, error) {
	ins, err := parse(data)
	if err != nil {
		return discovery.Snapshot{}, err
	}
	// parse already validated and de-duplicated; NewSnapshot sorts and
	// guards the invariant should the two ever drift apart.
	return discovery.NewSnapshot(SourceName, ins, at)
}

// readFile reads at most MaxFileSize bytes of path and returns them with the
// identity of the file they came from, taken before the read. It reports
// errInFlux when the file changed while it was read, so that the caller
// tries again on its next poll instead of parsing a torn read.
func readFile(path string) ([]byte, fileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileID{}, err
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	if !before.Mode().IsRegular() {
		return nil, fileID{}, fmt.Errorf("%s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fileID{}, err
	}
	if len(data) > MaxFileSize {
		return nil, fileID{}, fmt.Errorf("%s: %w: over %d bytes", path, ErrTooLarge, MaxFileSize)
	}
	after, err := f.Stat()
	if err != nil {
		return nil, fileID{}, err
	}
	id := idOf(before)
	if idOf(after) != id || int64(len(data)) != id.size {
		return nil, fileID{}, errInFlux
	}
	return data, id, nil
}

// errInFlux is internal: a file being written is neither a failure to log
// nor a version to count as rejected.
var errInFlux = errors.New("file changed while being read")

// entry decodes one list item. Unknown collects every key that matches no
// Instance field, so that a typo such as "modles" is an error instead of a
// silently missing list. (Node.Decode has no KnownFields switch; the inline
// map also sees keys brought in by a YAML merge key.)
type entry struct {
	discovery.Instance `yaml:",inline"`
	Unknown            map[string]yaml.Node `yaml:",inline"`
}

// parse is Parse without the package prefix, so Load and the Source can put
// the path in between.
func parse(data []byte) ([]discovery.Instance, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrEmpty // also when yaml would object to a tab first
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrEmpty
		}
		return nil, err // yaml syntax errors already say "yaml: line N: ..."
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("%w: second document at line %d", ErrMultipleDocuments, next.Line)
	}
	if len(doc.Content) != 1 {
		return nil, ErrEmpty
	}
	root := doc.Content[0]
	switch {
	case root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null":
		return nil, ErrEmpty // "---" alone, "~" or "null"
	case root.Kind != yaml.SequenceNode:
		return nil, fmt.Errorf("%w: found %s at line %d", ErrNotList, kindName(root), root.Line)
	}

	out := make([]discovery.Instance, 0, len(root.Content))
	firstAt := make(map[string]int, len(root.Content)) // id -> position
	for i, n := range root.Content {
		in, err := decodeEntry(n)
		if err == nil {
			err = in.Validate()
		}
		if err != nil {
			return nil, entryError(i, n, in.ID, err)
		}
		if j, dup := firstAt[in.ID]; dup {
			return nil, entryError(i, n, in.ID, fmt.Errorf("%w: first at entry %d (line %d)",
				discovery.ErrDuplicateID, j, root.Content[j].Line))
		}
		firstAt[in.ID] = i
		out = append(out, in)
	}
	return out, nil
}

// decodeEntry decodes one list item. On error it still returns whatever it
// decoded, so the caller can name the entry by id.
func decodeEntry(n *yaml.Node) (discovery.Instance, error) {
	m := n
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		m = n.Alias
	}
	if m.Kind != yaml.MappingNode {
		return discovery.Instance{}, fmt.Errorf("not an instance object: found %s", kindName(m))
	}
	var e entry
	if err := n.Decode(&e); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			// One line per problem reads badly inside a one-line error.
			return e.Instance, errors.New(strings.Join(te.Errors, "; "))
		}
		return e.Instance, err
	}
	if err := checkWeight(m); err != nil {
		return e.Instance, err
	}
	if len(e.Unknown) > 0 {
		keys := make([]string, 0, len(e.Unknown))
		for k := range e.Unknown {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return e.Instance, fmt.Errorf("%w %q at line %d", ErrUnknownField, keys[0], keyLine(m, keys[0], e.Unknown[keys[0]]))
	}
	if len(e.Meta) == 0 {
		// "meta: {}" and no meta are the same instance; one form keeps
		// comparisons and the JSON round trip exact.
		e.Meta = nil
	}
	return e.Instance, nil
}

// checkWeight rejects a weight that YAML types as a float, because yaml.v3
// truncates it into the int field without a word (1.5 would become 1).
// Weights that come through merge keys are checked too.
func checkWeight(m *yaml.Node) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		switch {
		case k.ShortTag() == "!!merge":
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, mm := range merged {
				if mm.Kind == yaml.AliasNode && mm.Alias != nil {
					mm = mm.Alias
				}
				if mm.Kind != yaml.MappingNode {
					continue // Decode reports it
				}
				if err := checkWeight(mm); err != nil {
					return err
				}
			}
		case k.Value == "weight" && v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float":
			return fmt.Errorf("weight %s at line %d: must be a whole number", v.Value, v.Line)
		}
	}
	return nil
}

// keyLine returns the line of key in mapping m, or the line of its value
// when the key came through a merge key and is not written in m itself.
func keyLine(m *yaml.Node, key string, value yaml.Node) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i].Line
		}
	}
	return value.Line
}

func entryError(i int, n *yaml.Node, id string, err error) error {
	if id != "" {
		return fmt.Errorf("entry %d (id %q, line %d): %w", i, id, n.Line, err)
	}
	return fmt.Errorf("entry %d (line %d): %w", i, n.Line, err)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return fmt.Sprintf("the scalar %q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	default:
		return "an unexpected node"
	}
}
