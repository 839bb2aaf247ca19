// Package static is the static-file registry: a YAML or JSON file whose top
// level is a list of discovery.Instance objects, re-read when it changes.
//
// It owns the file format (Parse), a one-shot read (Load) and a polling
// discovery.Source (Source.Watch). It must not know who consumes the
// snapshots (routing, sidecar) nor any other registry; it depends on
// package discovery for the instance rules, so a static file is held to
// exactly the rules an etcd or Consul registration is.
//
// # Format
//
// JSON is valid YAML, so one parser (go.yaml.in/yaml/v3) reads both:
//
//	# instances.yaml
//	- id: gpu-a-0
//	  address: 10.0.0.5:8000
//	  models: [llama-3.1-8b, llama-3.1-8b:sql-lora]
//	  meta: {engine: vllm, zone: a}
//	  weight: 2        # optional, 0 or absent means 1
//	  draining: false  # optional
//
// Parsing is strict because a typo must not silently change routing: an
// unknown field ("modles") is an error, and so is a document that holds no
// value at all (empty, or only white space and comments), because a
// half-written file must not wipe the routing table. An explicit empty list
// "[]" is valid and means zero instances. A file holds exactly one YAML
// document.
//
// Errors name the entry by its 0-based position in the list (as
// discovery.NewSnapshot and Instance.Validate do for models[i]), its id when
// known, and the 1-based line an editor shows, e.g.
//
//	static: entry 2 (id "gpu-b", line 9): discovery: invalid instance: instance "gpu-b": address: ...
//
// # Reloading
//
// Source polls the file (default every second). A change is noticed by size,
// modification time and inode (so both an in-place rewrite and an atomic
// rename of a new file over the old one are seen), and confirmed by a
// content hash, so a rewrite with identical bytes sends nothing. A missing
// or invalid file keeps the last good snapshot; a failure seen on two polls
// in a row (not a file caught for an instant mid-write) is logged once and
// counted by Rejected until the file changes again. Writers should replace the file by
// atomic rename: an in-place rewrite can be read half-written, and a
// half-written file that still parses applies until the next poll.
package static
