package deploy_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	unitFile   = "systemd/blitzscale-sidecar.service"
	configFile = "systemd/sidecar.yaml"
	envExample = "systemd/sidecar.env.example"
)

// unit is a systemd unit file: section -> key -> values in order (a key may
// repeat, as SystemCallFilter= does).
type unit map[string]map[string][]string

// parseUnit reads the INI-like unit format: [Section] headers, Key=Value
// lines, '#' and ';' comments, '\' continuations.
func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var pending string
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending != "" {
			line, pending = pending+" "+line, ""
		}
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, val, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: %q is not Key=Value inside a section", n, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(val))
		}
	}
	return u, sc.Err()
}

// systemdSeconds parses a systemd time span ("45", "45s", "1min 30s").
func systemdSeconds(s string) (time.Duration, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	r := strings.NewReplacer(" ", "", "min", "m", "sec", "s", "hour", "h")
	return time.ParseDuration(r.Replace(s))
}

func TestSystemdUnit(t *testing.T) {
	u, err := parseUnit(readFile(t, unitFile))
	if err != nil {
		t.Fatalf("%s: %v", unitFile, err)
	}
	svc := u["Service"]
	if svc == nil {
		t.Fatalf("%s: no [Service] section", unitFile)
	}
	// Each key must be present with this exact value ("" for an empty
	// assignment such as CapabilityBoundingSet=, which drops every capability).
	for _, tc := range []struct{ key, want string }{
		{"DynamicUser", "yes"},
		{"StateDirectory", "blitzscale"},
		{"NoNewPrivileges", "yes"},
		{"ProtectSystem", "strict"},
		{"ProtectHome", "yes"},
		{"PrivateTmp", "yes"},
		{"PrivateDevices", "yes"},
		{"RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"},
		{"CapabilityBoundingSet", ""},
		{"SystemCallFilter", "@system-service"},
		{"MemoryDenyWriteExecute", "yes"},
		{"LockPersonality", "yes"},
		{"ProtectKernelTunables", "yes"},
		{"ProtectKernelModules", "yes"},
		{"ProtectKernelLogs", "yes"},
		{"ProtectControlGroups", "yes"},
		{"RestrictNamespaces", "yes"},
		{"RestrictRealtime", "yes"},
		{"RestrictSUIDSGID", "yes"},
		{"UMask", "0077"},
		{"LimitNOFILE", "65536"},
		{"KillSignal", "SIGTERM"},
		{"Restart", "on-failure"},
		{"EnvironmentFile", "-/etc/blitzscale/sidecar.env"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			vals, ok := svc[tc.key]
			if !ok {
				t.Fatalf("[Service] has no %s=", tc.key)
			}
			for _, v := range vals {
				if v == tc.want {
					return
				}
			}
			t.Errorf("[Service] %s=%q, want %q among them", tc.key, vals, tc.want)
		})
	}
	t.Run("TimeoutStopSec", func(t *testing.T) {
		v := svc["TimeoutStopSec"]
		if len(v) != 1 {
			t.Fatalf("want one TimeoutStopSec=, have %q", v)
		}
		d, err := systemdSeconds(v[0])
		if err != nil {
			t.Fatalf("TimeoutStopSec=%s: %v", v[0], err)
		}
		if limit := configShutdownTimeout(t); d <= limit {
			t.Errorf("TimeoutStopSec=%v must exceed the sidecar's shutdown-timeout %v, or systemd kills open streams", d, limit)
		}
	})
	t.Run("ExecStart", func(t *testing.T) {
		v := svc["ExecStart"]
		if len(v) != 1 {
			t.Fatalf("want one ExecStart=, have %q", v)
		}
		args := strings.Fields(v[0])
		if len(args) < 2 || args[0] != "/usr/local/bin/blitzscale" || args[1] != "sidecar" {
			t.Fatalf("ExecStart=%s: want /usr/local/bin/blitzscale sidecar ...", v[0])
		}
		checkArgs(t, unitFile, args[2:])
		for i, a := range args {
			if a == "--config" && (i+1 >= len(args) || args[i+1] != "/etc/blitzscale/sidecar.yaml") {
				t.Errorf("--config should name /etc/blitzscale/sidecar.yaml, where %s is installed", configFile)
			}
		}
	})
	t.Run("Install", func(t *testing.T) {
		if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
			t.Errorf("[Install] WantedBy=%q, want multi-user.target", got)
		}
	})
}

func TestParseUnit(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       unit
		wantErr    bool
	}{
		{"repeat and empty", "[Service]\nA=1\nA=2\nB=\n", unit{"Service": {"A": {"1", "2"}, "B": {""}}}, false},
		{"comments and continuation", "# x\n[S]\n; y\nExecStart=/bin/a \\\n  --b c\n", unit{"S": {"ExecStart": {"/bin/a  --b c"}}}, false},
		{"key outside section", "A=1\n", nil, true},
		{"not key=value", "[S]\nnonsense\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseUnit(tc.text)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

var flagName = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)

// sidecarConfig reads the example --config file.
func sidecarConfig(t *testing.T) map[string]any {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(readFile(t, configFile)), &m); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	return m
}

// configShutdownTimeout is the shutdown-timeout the example config sets, else
// the sidecar's default.
func configShutdownTimeout(t *testing.T) time.Duration {
	t.Helper()
	v, ok := sidecarConfig(t)["shutdown-timeout"]
	if !ok {
		return shutdownTimeout(t)
	}
	d, err := time.ParseDuration(fmt.Sprint(v))
	if err != nil {
		t.Fatalf("%s: shutdown-timeout %v: %v", configFile, v, err)
	}
	return d
}

func TestSidecarConfigFile(t *testing.T) {
	flags := sidecarFlags(t)
	cfg := sidecarConfig(t)
	t.Run("keys", func(t *testing.T) {
		if len(cfg) == 0 {
			t.Fatalf("%s sets nothing", configFile)
		}
		for k := range cfg {
			if _, ok := flags[k]; !ok || k == "config" {
				t.Errorf("%s: key %q is not a `blitzscale sidecar` flag", configFile, k)
			}
		}
	})
	t.Run("commented keys", func(t *testing.T) {
		// "# upstream-api-key-file: ..." lines document optional settings:
		// they must name real flags too.
		sc := bufio.NewScanner(strings.NewReader(readFile(t, configFile)))
		for sc.Scan() {
			line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "#"))
			key, val, ok := strings.Cut(line, ": ")
			if !ok || !flagName.MatchString(key) || val == "" {
				continue
			}
			if _, ok := flags[key]; !ok {
				t.Errorf("%s: commented key %q is not a flag", configFile, key)
			}
		}
	})
	t.Run("env example", func(t *testing.T) { checkEnvNames(t, envExample, readFile(t, envExample)) })
	t.Run("values", func(t *testing.T) { checkConfigRuns(t) })
	t.Run("as configured", func(t *testing.T) {
		cmd := exec.Command(sidecarBinary(t), "sidecar", "--config", configFile, "--check-config")
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("blitzscale sidecar --config %s --check-config: %v\n%s", configFile, err, out)
		}
	})
}

// checkConfigRuns proves the example's values parse and validate with
// --check-config, its registry swapped for a static file so that the check
// does not depend on the registry's own settings.
func checkConfigRuns(t *testing.T) {
	bin := sidecarBinary(t)
	dir := t.TempDir()
	static := filepath.Join(dir, "instances.yaml")
	if err := os.WriteFile(static, []byte("- {id: deploy-test, address: \"127.0.0.1:9\", models: [m]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "sidecar", "--config", configFile, "--check-config",
		"--registry", "static", "--static-file", static, "--state-dir", dir)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("blitzscale sidecar --config %s --check-config (registry static): %v\n%s", configFile, err, out)
	}
}
