package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type layeredFlags struct {
	config, policy string
	timeout        time.Duration
	retries        int
	models         stringList
}

func newLayeredSet() (*flag.FlagSet, *layeredFlags) {
	var f layeredFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.StringVar(&f.config, "config", "", "")
	fs.StringVar(&f.policy, "policy", "auto", "")
	fs.DurationVar(&f.timeout, "first-byte-timeout", time.Minute, "")
	fs.IntVar(&f.retries, "max-retries", 2, "")
	fs.Var(&f.models, "model", "")
	return fs, &f
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseLayeredPrecedence(t *testing.T) {
	file := writeFile(t, "c.yaml", "policy: round-robin\nfirst-byte-timeout: 5s\nmax-retries: 1\nmodel: [a, b]\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want layeredFlags
	}{
		{"defaults", nil, nil, layeredFlags{policy: "auto", timeout: time.Minute, retries: 2}},
		{"file", []string{"--config", file}, nil,
			layeredFlags{config: file, policy: "round-robin", timeout: 5 * time.Second, retries: 1, models: stringList{"a", "b"}}},
		{"env over file", []string{"--config", file}, map[string]string{"BLITZ_POLICY": "p2c", "BLITZ_MODEL": "x,y"},
			layeredFlags{config: file, policy: "p2c", timeout: 5 * time.Second, retries: 1, models: stringList{"x", "y"}}},
		{"flag over env", []string{"--config", file, "--policy", "least-load"}, map[string]string{"BLITZ_POLICY": "p2c"},
			layeredFlags{config: file, policy: "least-load", timeout: 5 * time.Second, retries: 1, models: stringList{"a", "b"}}},
		{"config path from env", nil, map[string]string{"BLITZ_CONFIG": file},
			layeredFlags{policy: "round-robin", timeout: 5 * time.Second, retries: 1, models: stringList{"a", "b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, got := newLayeredSet()
			if err := parseLayered(fs, tc.args, func(k string) string { return tc.env[k] }); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(layeredFlags{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseLayeredErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown key", "polcy: p2c\n", nil, nil, `"polcy"`},
		{"bad duration in file", "first-byte-timeout: soon\n", nil, nil, "first-byte-timeout (config file)"},
		{"bad int in env", "", map[string]string{"BLITZ_MAX_RETRIES": "many"}, nil, "max-retries (from BLITZ_MAX_RETRIES)"},
		{"list for scalar", "policy: [a, b]\n", nil, nil, "policy (config file)"},
		{"not yaml", "policy: [\n", nil, nil, "config:"},
		{"bad flag", "", nil, []string{"--nope"}, "nope"},
		{"positional", "", nil, []string{"extra"}, `"extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := newLayeredSet()
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, "c.yaml", tc.file)}, args...)
			}
			err := parseLayered(fs, args, func(k string) string { return tc.env[k] })
			if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want a usage error naming %s", err, tc.want)
			}
		})
	}
}
