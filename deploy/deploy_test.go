package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The sidecar binary is built once per test run, on first use, so that every
// file is checked against the flags the program really has.
var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// sidecarBinary returns the path of a freshly built blitzscale binary.
func sidecarBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "blitzscale-deploy-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "blitzscale")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/blitzscale").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ../cmd/blitzscale: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// sidecarFlag is one flag of `blitzscale sidecar -h`.
type sidecarFlag struct {
	name string
	def  string // the "(default ...)" of the help text, "" when none
}

var (
	flagsOnce sync.Once
	flagsErr  error
	flagsByID map[string]sidecarFlag
)

var (
	flagLine    = regexp.MustCompile(`^\s{2}-([a-z0-9][a-z0-9-]*)\b`)
	defaultText = regexp.MustCompile(`\(default "?([^")]*)"?\)\s*$`)
)

// parseFlagHelp reads the flag package's PrintDefaults format: a line
// "  -name type" followed by indented usage lines, the last of which may end
// in "(default X)".
func parseFlagHelp(help string) map[string]sidecarFlag {
	flags := map[string]sidecarFlag{}
	var cur string
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		line := sc.Text()
		if m := flagLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			if _, ok := flags[cur]; !ok {
				flags[cur] = sidecarFlag{name: cur}
			}
		}
		if cur == "" {
			continue
		}
		if m := defaultText.FindStringSubmatch(line); m != nil {
			f := flags[cur]
			f.def = m[1]
			flags[cur] = f
		}
	}
	return flags
}

// sidecarFlags returns the real flags of `blitzscale sidecar`, by name.
func sidecarFlags(t *testing.T) map[string]sidecarFlag {
	t.Helper()
	bin := sidecarBinary(t)
	flagsOnce.Do(func() {
		cmd := exec.Command(bin, "sidecar", "-h")
		cmd.Env = cleanEnv()
		// -h prints to stderr; its exit status is not part of this contract.
		out, _ := cmd.CombinedOutput()
		flagsByID = parseFlagHelp(string(out))
		if len(flagsByID) < 10 {
			flagsErr = fmt.Errorf("blitzscale sidecar -h listed %d flags; output:\n%s", len(flagsByID), out)
		}
	})
	if flagsErr != nil {
		t.Fatal(flagsErr)
	}
	return flagsByID
}

// cleanEnv is the test's environment without BLITZ_* and CONSUL_HTTP_*
// variables, so that a developer's shell cannot change what the binary does.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BLITZ_") || strings.HasPrefix(kv, "CONSUL_HTTP_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// flagOfEnv maps BLITZ_SHUTDOWN_TIMEOUT to shutdown-timeout.
func flagOfEnv(name string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "BLITZ_"), "_", "-"))
}

var envRef = regexp.MustCompile(`\bBLITZ_[A-Z0-9_]+\b`)

// checkEnvNames fails for every BLITZ_* name in text that is no flag.
func checkEnvNames(t *testing.T, file, text string) {
	t.Helper()
	flags := sidecarFlags(t)
	for _, name := range envRef.FindAllString(text, -1) {
		if _, ok := flags[flagOfEnv(name)]; !ok {
			t.Errorf("%s: %s names no `blitzscale sidecar` flag (--%s)", file, name, flagOfEnv(name))
		}
	}
}

// checkArgs fails for every -flag or --flag[=v] in args that is no flag.
func checkArgs(t *testing.T, file string, args []string) {
	t.Helper()
	flags := sidecarFlags(t)
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if _, ok := flags[name]; !ok {
			t.Errorf("%s: %s is no `blitzscale sidecar` flag", file, a)
		}
	}
}

// shutdownTimeout is the sidecar's default --shutdown-timeout, from its help.
func shutdownTimeout(t *testing.T) time.Duration {
	t.Helper()
	f, ok := sidecarFlags(t)["shutdown-timeout"]
	if !ok {
		t.Fatal("blitzscale sidecar has no --shutdown-timeout flag")
	}
	d, err := time.ParseDuration(f.def)
	if err != nil {
		t.Fatalf("--shutdown-timeout default %q: %v", f.def, err)
	}
	return d
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseFlagHelp(t *testing.T) {
	help := `usage: blitzscale sidecar [flags]
  -burst-high int
    	burst of the high-priority token bucket (0: max(1, rate))
  -consul-addr string
    	Consul agent address (default from CONSUL_HTTP_ADDR) (default "127.0.0.1:8500")
  -shutdown-timeout duration
    	how long open streams may finish
    	after SIGTERM (default 30s)
  -v	verbose
`
	want := map[string]sidecarFlag{
		"burst-high":       {name: "burst-high"},
		"consul-addr":      {name: "consul-addr", def: "127.0.0.1:8500"},
		"shutdown-timeout": {name: "shutdown-timeout", def: "30s"},
		"v":                {name: "v"},
	}
	if diff := cmp.Diff(want, parseFlagHelp(help), cmp.AllowUnexported(sidecarFlag{})); diff != "" {
		t.Errorf("parseFlagHelp (-want +got):\n%s", diff)
	}
}

// TestSidecarFlags guards the parser above against a change of help format:
// flags every deploy file relies on must be found.
func TestSidecarFlags(t *testing.T) {
	flags := sidecarFlags(t)
	for _, name := range []string{"listen", "registry", "service", "consul-addr", "config", "sidecar-id", "shutdown-timeout", "log-format"} {
		t.Run(name, func(t *testing.T) {
			if _, ok := flags[name]; !ok {
				names := make([]string, 0, len(flags))
				for n := range flags {
					names = append(names, n)
				}
				sort.Strings(names)
				t.Errorf("--%s not in `blitzscale sidecar -h`; found %v", name, names)
			}
		})
	}
}
