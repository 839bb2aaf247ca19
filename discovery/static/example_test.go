package static_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/blitzscale/router/discovery/static"
)

func ExampleParse() {
	ins, err := static.Parse([]byte(`
- id: gpu-a-0
  address: 10.0.0.5:8000
  models: [llama-3.1-8b]
  meta: {engine: vllm, zone: a}
- id: gpu-b-0
  address: 10.0.1.5:8000
  models: [llama-3.1-8b]
  modles: [qwen2.5-7b-instruct]
`))
	fmt.Println(ins, err)
	// Output:
	// [] static: entry 1 (id "gpu-b-0", line 6): unknown field "modles" at line 9
}

func ExampleLoad() {
	snap, err := static.Load(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, in := range snap.Instances {
		fmt.Println(in.ID, in.Address, in.Models, in.Meta["zone"], in.EffectiveWeight())
	}
	// Output:
	// gpu-a-0 10.0.0.5:8000 [llama-3.1-8b] a 1
	// gpu-a-1 10.0.0.6:8000 [llama-3.1-8b] a 2
	// gpu-b-0 10.0.1.5:30000 [qwen2.5-7b-instruct] b 1
}

func ExampleSource_Watch() {
	src := static.New(filepath.Join("testdata", "example.yaml"))
	src.PollInterval = 10 * time.Millisecond
	src.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	snap := <-src.Watch(ctx) // the first snapshot marks readiness
	fmt.Println(snap.Source, len(snap.Instances), src.Rejected())
	// Output:
	// static 3 0
}
