package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// errUsage marks bad usage or invalid configuration: exit code 2.
var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, a...)...)
}

// envName is the environment variable of a flag: BLITZ_<FLAG_IN_UPPER_SNAKE>.
func envName(flagName string) string {
	return "BLITZ_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseLayered parses args into fs, then fills every flag the command line
// did not set from the environment (BLITZ_*), else from the YAML file named
// by the "config" flag (same key as the flag). Flags win over env, env over
// file. A repeatable flag takes a comma-separated env value or a YAML list.
func parseLayered(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.SetOutput(new(strings.Builder)) // errors are reported by the caller
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var file map[string]any
	if cf := fs.Lookup("config"); cf != nil {
		path := cf.Value.String()
		if !set["config"] && getenv(envName("config")) != "" {
			path = getenv(envName("config"))
		}
		if path != "" {
			var err error
			if file, err = readConfigFile(path, fs); err != nil {
				return err
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] || f.Name == "config" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			err = setFromEnv(f, v)
			return
		}
		if v, ok := file[f.Name]; ok {
			err = setFromFile(f, v)
		}
	})
	return err
}

func setFromEnv(f *flag.Flag, v string) error {
	values := []string{v}
	if _, repeatable := f.Value.(*stringList); repeatable {
		values = strings.Split(v, ",")
	}
	for _, x := range values {
		if err := f.Value.Set(strings.TrimSpace(x)); err != nil {
			return usageErr("%s (from %s): %v", f.Name, envName(f.Name), err)
		}
	}
	return nil
}

func setFromFile(f *flag.Flag, v any) error {
	var values []string
	switch x := v.(type) {
	case []any:
		if _, repeatable := f.Value.(*stringList); !repeatable {
			return usageErr("%s (config file): a list is only valid for a repeatable flag", f.Name)
		}
		for _, e := range x {
			values = append(values, scalarString(e))
		}
	case map[string]any:
		return usageErr("%s (config file): want a scalar value, not a mapping", f.Name)
	default:
		values = []string{scalarString(x)}
	}
	for _, s := range values {
		if err := f.Value.Set(s); err != nil {
			return usageErr("%s (config file): %v", f.Name, err)
		}
	}
	return nil
}

func scalarString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case int:
		return strconv.Itoa(x)
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case time.Time:
		return x.Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}

// readConfigFile loads the YAML file and rejects keys that name no flag, so
// a typo does not silently fall back to a default.
func readConfigFile(path string, fs *flag.FlagSet) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, usageErr("config: %v", err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, usageErr("config: %s: %v", path, err)
	}
	var unknown []string
	for k := range m {
		if fs.Lookup(k) == nil || k == "config" {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, usageErr("config: %s: unknown key %q (keys are the flag names)", path, unknown[0])
	}
	return m, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	if v == "" {
		return errors.New("empty value")
	}
	*l = append(*l, v)
	return nil
}
