// Command blitzscale is the BlitzScale Router binary: the per-host sidecar
// router for LLM inference, its engine simulator, demo and status tools.
// This package only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set by the linker: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // a reload is already pending
			}
		}
	}()
	code := runEnv(ctx, os.Args[1:], env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, reload: reload})
	stop()
	os.Exit(code)
}

// command is one subcommand: it parses its own args and runs until ctx is
// done or its work ends.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env env) error
}

// env is what a command may touch outside its arguments; tests pass their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// reload delivers SIGHUP (nil: reloads are not wired).
	reload <-chan struct{}
}

func commands() []command {
	return []command{
		{"sidecar", "run the router (the main job)", runSidecar},
		{"register", "register one inference instance in etcd or Consul and keep it registered while it is healthy", runRegister},
		{"demo", "embedded registry + three simulated engines + a sidecar on 127.0.0.1:8089", runDemo},
		{"sim", "one simulated OpenAI-compatible engine", runSim},
		{"status", "print a running sidecar's routing view", runStatus},
		{"version", "print version, commit and Go version", runVersion},
	}
}

// run executes the command line and returns the process exit code:
// 0 clean shutdown, 1 runtime failure, 2 bad usage or invalid configuration.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return runEnv(ctx, args, env{stdout: stdout, stderr: stderr, getenv: getenv})
}

func runEnv(ctx context.Context, args []string, e env) int {
	stderr := e.stderr
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], e)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "blitzscale %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "blitzscale %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "blitzscale: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: blitzscale <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery flag also reads BLITZ_<FLAG> from the environment and the same key from --config FILE.yaml.\nRun 'blitzscale <command> -h' for its flags.")
}

// newFlagSet returns a flag set whose -h prints the command's flags.
func newFlagSet(name string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: blitzscale %s [flags]\n", name)
		fs.SetOutput(e.stderr)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses with layering; -h prints usage (the flag package calls
// fs.Usage itself).
func parse(fs *flag.FlagSet, args []string, e env) error {
	return parseLayered(fs, args, e.getenv)
}
