package main

import (
	"context"
	"fmt"
	"runtime"
)

func runVersion(_ context.Context, args []string, e env) error {
	fs := newFlagSet("version", e)
	if err := parse(fs, args, e); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "blitzscale %s (commit %s, %s)\n", version, commit, runtime.Version())
	return nil
}
