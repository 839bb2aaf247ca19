package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	alertsFile    = "prometheus/alerts.yml"
	scrapeFile    = "prometheus/scrape.yml"
	dashboardFile = "grafana/blitzscale.json"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func decodeYAMLStrict(t *testing.T, file string, v any) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func TestAlertRules(t *testing.T) {
	var rf ruleFile
	decodeYAMLStrict(t, alertsFile, &rf)
	if len(rf.Groups) == 0 {
		t.Fatalf("%s: no rule groups", alertsFile)
	}
	// The alerts operators rely on, and the metric each must watch.
	want := map[string]string{
		"BlitzBreakerOpen":            "blitz_breaker_state",
		"BlitzShedRateHigh":           "blitz_shed_total",
		"BlitzNoRoutableInstance":     "blitz_instances",
		"BlitzDiscoveryStale":         "blitz_discovery_stale",
		"BlitzLoadPublishFailing":     "blitz_load_publish_total",
		"BlitzUpstreamErrorRatioHigh": "blitz_requests_total",
	}
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			t.Run(name, func(t *testing.T) {
				if r.Alert == "" {
					t.Fatalf("group %s: a rule without alert name", g.Name)
				}
				if seen[name] {
					t.Errorf("alert %s defined twice", name)
				}
				seen[name] = true
				checkPromQL(t, alertsFile+": "+name, r.Expr)
				if m, ok := want[name]; ok && !strings.Contains(r.Expr, m) {
					t.Errorf("expr %q does not watch %s", r.Expr, m)
				}
				if r.For != "" {
					if _, err := time.ParseDuration(r.For); err != nil {
						t.Errorf("for %q: %v", r.For, err)
					}
				}
				if s := r.Labels["severity"]; s != "critical" && s != "warning" {
					t.Errorf("severity %q, want critical or warning", s)
				}
				if r.Annotations["summary"] == "" {
					t.Errorf("no summary annotation")
				}
			})
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s: no alert %s", alertsFile, name)
		}
	}
	t.Run("breaker open for over a minute", func(t *testing.T) {
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == "BlitzBreakerOpen" {
					if d, _ := time.ParseDuration(r.For); d < time.Minute || !strings.Contains(r.Expr, "== 2") {
						t.Errorf("BlitzBreakerOpen: expr %q for %q, want state 2 (open) for ≥ 1m", r.Expr, r.For)
					}
				}
			}
		}
	})
}

type scrapeConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string           `yaml:"job_name"`
		HonorLabels   bool             `yaml:"honor_labels"`
		MetricsPath   string           `yaml:"metrics_path"`
		StaticConfigs []map[string]any `yaml:"static_configs"`
		FileSD        []map[string]any `yaml:"file_sd_configs"`
		ConsulSD      []map[string]any `yaml:"consul_sd_configs"`
	} `yaml:"scrape_configs"`
}

func TestScrapeConfig(t *testing.T) {
	var sc scrapeConfig
	// Not strict: Prometheus has many fields this test does not look at.
	if err := yaml.Unmarshal([]byte(readFile(t, scrapeFile)), &sc); err != nil {
		t.Fatalf("%s: %v", scrapeFile, err)
	}
	t.Run("rule files", func(t *testing.T) {
		for _, f := range sc.RuleFiles {
			if _, err := os.Stat(filepath.Join(filepath.Dir(scrapeFile), f)); err != nil {
				t.Errorf("rule_files: %v", err)
			}
		}
		if len(sc.RuleFiles) == 0 {
			t.Errorf("rule_files does not load %s", filepath.Base(alertsFile))
		}
	})
	var local, discovered bool
	for _, j := range sc.ScrapeConfigs {
		t.Run(j.JobName, func(t *testing.T) {
			if !strings.HasPrefix(j.JobName, "blitzscale-sidecar") {
				t.Errorf("job_name %q: alerts.yml's BlitzSidecarDown matches blitzscale-sidecar.*", j.JobName)
			}
			if !j.HonorLabels {
				t.Errorf("honor_labels must be true: the sidecar's `instance` label would become exported_instance")
			}
			if j.MetricsPath != "/metrics" {
				t.Errorf("metrics_path %q, want /metrics", j.MetricsPath)
			}
			if len(j.FileSD)+len(j.ConsulSD) > 0 {
				discovered = true
			}
			for _, s := range j.StaticConfigs {
				if strings.Contains(fmt.Sprint(s["targets"]), "127.0.0.1:8089") {
					local = true
				}
			}
		})
	}
	if !local {
		t.Errorf("%s: no static target 127.0.0.1:8089 (the sidecar's default --listen)", scrapeFile)
	}
	if !discovered {
		t.Errorf("%s: no file_sd or consul_sd example", scrapeFile)
	}
}

type dashboard struct {
	SchemaVersion int    `json:"schemaVersion"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func readDashboard(t *testing.T) (dashboard, []panel) {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return d, all
}

func TestGrafanaDashboard(t *testing.T) {
	d, panels := readDashboard(t)
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want ≥ 36", d.SchemaVersion)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q and title %q must be set", d.UID, d.Title)
	}
	t.Run("datasource variable", func(t *testing.T) {
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
				return
			}
		}
		t.Errorf("no `datasource` variable of type datasource querying prometheus")
	})
	t.Run("variable queries", func(t *testing.T) {
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			// label_values(<selector>, <label>)
			args, ok := strings.CutPrefix(v.Definition, "label_values(")
			sel, label, ok2 := strings.Cut(strings.TrimSuffix(args, ")"), ",")
			if !ok || !ok2 {
				t.Errorf("variable %s: %q is not label_values(<selector>, <label>)", v.Name, v.Definition)
				continue
			}
			checkPromQL(t, "variable "+v.Name, sel+` != ""`)
			checkPromQL(t, "variable "+v.Name, "sum by ("+strings.TrimSpace(label)+") ("+sel+")")
		}
	})
	// Panels operators look for, by a word of their title.
	for _, title := range []string{
		"Request rate by code", "Request duration", "Time to first token", "In-flight requests by instance",
		"Queue depth by priority", "Shed rate", "Breaker state by instance", "Routable instances by model",
		"Load publish", "overhead",
	} {
		t.Run("panel "+title, func(t *testing.T) {
			for _, p := range panels {
				if strings.Contains(strings.ToLower(p.Title), strings.ToLower(title)) {
					return
				}
			}
			t.Errorf("no panel titled like %q", title)
		})
	}
	ids := map[int]bool{}
	for _, p := range panels {
		t.Run(fmt.Sprintf("%d %s", p.ID, p.Title), func(t *testing.T) {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				return
			}
			if p.Datasource.UID != "${datasource}" {
				t.Errorf("datasource uid %q, want ${datasource}", p.Datasource.UID)
			}
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("gridPos %+v outside Grafana's 24 columns", p.GridPos)
			}
			if len(p.Targets) == 0 {
				t.Errorf("no query")
			}
			for _, tg := range p.Targets {
				checkPromQL(t, dashboardFile+": "+p.Title, tg.Expr)
			}
		})
	}
}

// dashboardExprs returns the dashboard's queries with Grafana's variables
// replaced, so that promtool can parse them.
func dashboardExprs(t *testing.T) []string {
	_, panels := readDashboard(t)
	r := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "${model}", ".*", "$model", ".*")
	var exprs []string
	for _, p := range panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, r.Replace(tg.Expr))
		}
	}
	return exprs
}

// TestPromtool runs Prometheus' own checker where it is installed (Debian:
// apt-get install prometheus): it parses the alert rules, and the dashboard's
// queries written out as recording rules.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	t.Run("check rules "+alertsFile, func(t *testing.T) {
		if err != nil {
			t.Skip("promtool is not on PATH; TestAlertRules still checks names, labels and durations")
		}
		if out, err := exec.Command(promtool, "check", "rules", alertsFile).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules %s: %v\n%s", alertsFile, err, out)
		}
	})
	t.Run("check dashboard queries", func(t *testing.T) {
		if err != nil {
			t.Skip("promtool is not on PATH; TestGrafanaDashboard still checks metric and label names")
		}
		var b strings.Builder
		b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, e := range dashboardExprs(t) {
			q, _ := json.Marshal(e) // a JSON string is a YAML string
			fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", i, q)
		}
		f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
		if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
			t.Errorf("promtool check rules (dashboard queries): %v\n%s", err, out)
		}
	})
}
