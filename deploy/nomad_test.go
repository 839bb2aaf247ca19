package deploy_test

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// nomadJob is one parsed job file: its body, and an evaluation context whose
// `var` object holds the defaults of its variable blocks.
type nomadJob struct {
	file string
	body *hclsyntax.Body
	ctx  *hcl.EvalContext
	vars map[string]bool
}

func parseNomadJob(t *testing.T, file string) *nomadJob {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCLFile(file)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", file, diags.Error())
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		t.Fatalf("%s: not native HCL syntax", file)
	}
	j := &nomadJob{file: file, body: body, vars: map[string]bool{}}
	defaults := map[string]cty.Value{}
	for _, v := range blocksOf(body, "variable") {
		if len(v.Labels) != 1 {
			t.Fatalf("%s:%d: variable block needs one label", file, v.TypeRange.Start.Line)
		}
		name := v.Labels[0]
		j.vars[name] = true
		if a, ok := v.Body.Attributes["default"]; ok {
			val, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("%s: variable %q default: %s", file, name, diags.Error())
			}
			defaults[name] = val
		}
	}
	j.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(defaults)}}
	return j
}

func blocksOf(b *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, blk := range b.Blocks {
		if blk.Type == typ {
			out = append(out, blk)
		}
	}
	return out
}

// oneBlock returns the only block of a type in b.
func (j *nomadJob) oneBlock(t *testing.T, b *hclsyntax.Body, typ string) *hclsyntax.Block {
	t.Helper()
	bs := blocksOf(b, typ)
	if len(bs) != 1 {
		t.Fatalf("%s: want one %q block, have %d", j.file, typ, len(bs))
	}
	return bs[0]
}

// value evaluates attribute name of b with the file's variables; ok is false
// when b has no such attribute.
func (j *nomadJob) value(t *testing.T, b *hclsyntax.Body, name string) (cty.Value, bool) {
	t.Helper()
	a, ok := b.Attributes[name]
	if !ok {
		return cty.NilVal, false
	}
	v, diags := a.Expr.Value(j.ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: %s: %s", j.file, name, diags.Error())
	}
	return v, true
}

func (j *nomadJob) str(t *testing.T, b *hclsyntax.Body, name string) string {
	t.Helper()
	v, ok := j.value(t, b, name)
	if !ok {
		t.Fatalf("%s:%d: no %q attribute", j.file, b.SrcRange.Start.Line, name)
	}
	if !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
		t.Fatalf("%s: %s: want a string, have %#v", j.file, name, v)
	}
	return v.AsString()
}

func (j *nomadJob) duration(t *testing.T, b *hclsyntax.Body, name string) time.Duration {
	t.Helper()
	s := j.str(t, b, name)
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s: %s = %q: %v", j.file, name, s, err)
	}
	return d
}

// env returns a task's env block as literal strings; values that hold Nomad
// runtime interpolation (${NOMAD_ALLOC_ID}) are returned as their source.
func (j *nomadJob) env(t *testing.T, task *hclsyntax.Block) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range blocksOf(task.Body, "env") {
		for name, a := range e.Body.Attributes {
			if v, diags := a.Expr.Value(j.ctx); !diags.HasErrors() && v.Type() == cty.String {
				out[name] = v.AsString()
				continue
			}
			r := a.Expr.Range()
			out[name] = string(r.SliceBytes(readBytes(t, j.file)))
		}
	}
	return out
}

func readBytes(t *testing.T, file string) []byte { return []byte(readFile(t, file)) }

// nomadRuntimeRoots are the names Nomad interpolates when it places a task
// (${attr.kernel.name}, ${NOMAD_ALLOC_ID}); HCL leaves them to it.
func nomadRuntimeRoot(name string) bool {
	return name == "attr" || name == "node" || name == "meta" || strings.HasPrefix(name, "NOMAD_")
}

// checkRefs fails for a var.x that no variable block declares, and for any
// other reference that is neither var nor a Nomad runtime name.
func (j *nomadJob) checkRefs(t *testing.T, b *hclsyntax.Body) {
	t.Helper()
	for _, a := range b.Attributes {
		for _, tr := range a.Expr.Variables() {
			root := tr.RootName()
			switch {
			case root == "var":
				if len(tr) < 2 {
					t.Errorf("%s:%d: bare `var`", j.file, tr.SourceRange().Start.Line)
					continue
				}
				if attr, ok := tr[1].(hcl.TraverseAttr); !ok || !j.vars[attr.Name] {
					t.Errorf("%s:%d: reference to an undeclared variable", j.file, tr.SourceRange().Start.Line)
				}
			case nomadRuntimeRoot(root):
			default:
				t.Errorf("%s:%d: %q is neither a variable nor a Nomad runtime name", j.file, tr.SourceRange().Start.Line, root)
			}
		}
	}
	for _, blk := range b.Blocks {
		if blk.Type == "variable" { // type = string is a type, not a reference; defaults were evaluated
			continue
		}
		j.checkRefs(t, blk.Body)
	}
}

// sidecarTask finds the task that runs `blitzscale sidecar` in group g.
func (j *nomadJob) sidecarTask(t *testing.T, g *hclsyntax.Block) *hclsyntax.Block {
	t.Helper()
	for _, task := range blocksOf(g.Body, "task") {
		cfg := blocksOf(task.Body, "config")
		if len(cfg) != 1 {
			continue
		}
		if v, ok := j.value(t, cfg[0].Body, "args"); ok && v.CanIterateElements() && v.LengthInt() > 0 {
			if first := v.Index(cty.NumberIntVal(0)); first.Type() == cty.String && first.AsString() == "sidecar" {
				return task
			}
		}
	}
	t.Fatalf("%s: no task whose args start with \"sidecar\"", j.file)
	return nil
}

func TestNomadJobs(t *testing.T) {
	for _, tc := range []struct {
		file          string
		jobType       string
		networkMode   string
		prestart      bool // the sidecar is a prestart sidecar beside an app task
		sidecarIDFrom string
	}{
		{"nomad/sidecar-prestart.nomad.hcl", "service", "bridge", true, "NOMAD_ALLOC_ID"},
		{"nomad/sidecar-system.nomad.hcl", "system", "host", false, "node.unique.name"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			j := parseNomadJob(t, tc.file)
			job := j.oneBlock(t, j.body, "job")
			group := j.oneBlock(t, job.Body, "group")
			task := j.sidecarTask(t, group)

			t.Run("formatted", func(t *testing.T) {
				src := readBytes(t, tc.file)
				if !bytes.Equal(hclwrite.Format(src), src) {
					t.Errorf("%s is not in canonical HCL format (nomad fmt / hclwrite.Format)", tc.file)
				}
			})
			t.Run("references", func(t *testing.T) { j.checkRefs(t, j.body) })
			t.Run("job", func(t *testing.T) {
				typ := "service"
				if _, ok := job.Body.Attributes["type"]; ok {
					typ = j.str(t, job.Body, "type")
				}
				if typ != tc.jobType {
					t.Errorf("job type %q, want %q", typ, tc.jobType)
				}
				if mode := j.str(t, j.oneBlock(t, group.Body, "network").Body, "mode"); mode != tc.networkMode {
					t.Errorf("network mode %q, want %q", mode, tc.networkMode)
				}
			})
			t.Run("lifecycle", func(t *testing.T) {
				lc := blocksOf(task.Body, "lifecycle")
				if !tc.prestart {
					if len(lc) != 0 {
						t.Errorf("the per-host sidecar needs no lifecycle block")
					}
					return
				}
				if len(lc) != 1 {
					t.Fatalf("want one lifecycle block in the sidecar task, have %d", len(lc))
				}
				if hook := j.str(t, lc[0].Body, "hook"); hook != "prestart" {
					t.Errorf("lifecycle hook %q, want prestart", hook)
				}
				if v, ok := j.value(t, lc[0].Body, "sidecar"); !ok || !v.Type().Equals(cty.Bool) || !v.True() {
					t.Errorf("lifecycle sidecar must be true")
				}
				var apps int
				for _, other := range blocksOf(group.Body, "task") {
					if other == task || len(blocksOf(other.Body, "lifecycle")) > 0 {
						continue
					}
					apps++
					listen := j.env(t, task)["BLITZ_LISTEN"]
					if got, want := j.env(t, other)["OPENAI_BASE_URL"], "http://"+listen+"/v1"; got != want {
						t.Errorf("app task %q: OPENAI_BASE_URL %q, want %q (the sidecar's BLITZ_LISTEN)", other.Labels[0], got, want)
					}
				}
				if apps == 0 {
					t.Errorf("no main (app) task beside the prestart sidecar")
				}
			})
			t.Run("task", func(t *testing.T) {
				if d := j.str(t, task.Body, "driver"); d != "exec" && d != "raw_exec" {
					t.Errorf("driver %q, want exec or raw_exec", d)
				}
				cfg := j.oneBlock(t, task.Body, "config")
				if a, ok := cfg.Body.Attributes["command"]; !ok || len(a.Expr.Variables()) == 0 || a.Expr.Variables()[0].RootName() != "var" {
					t.Errorf("config.command must be a variable (var.<name>)")
				}
				if len(blocksOf(task.Body, "artifact")) == 0 {
					t.Errorf("no artifact block to fetch the binary")
				}
				if sig := j.str(t, task.Body, "kill_signal"); sig != "SIGTERM" {
					t.Errorf("kill_signal %q, want SIGTERM", sig)
				}
				minKill := shutdownTimeout(t) + 5*time.Second
				if s, ok := j.env(t, task)["BLITZ_SHUTDOWN_TIMEOUT"]; ok {
					d, err := time.ParseDuration(s)
					if err != nil {
						t.Fatalf("BLITZ_SHUTDOWN_TIMEOUT %q: %v", s, err)
					}
					minKill = d + 5*time.Second
				}
				if kt := j.duration(t, task.Body, "kill_timeout"); kt < minKill {
					t.Errorf("kill_timeout %v: want ≥ %v (the sidecar's shutdown timeout plus 5s) so streams finish before SIGKILL", kt, minKill)
				}
				for _, b := range []string{"resources", "restart"} {
					if len(blocksOf(task.Body, b)) == 0 && len(blocksOf(group.Body, b)) == 0 {
						t.Errorf("no %s block in the task or its group", b)
					}
				}
			})
			t.Run("env", func(t *testing.T) {
				env := j.env(t, task)
				if got := env["BLITZ_REGISTRY"]; got != "consul" {
					t.Errorf("BLITZ_REGISTRY %q, want consul", got)
				}
				if env["BLITZ_SERVICE"] == "" {
					t.Errorf("BLITZ_SERVICE missing")
				}
				if !strings.Contains(env["BLITZ_SIDECAR_ID"], tc.sidecarIDFrom) {
					t.Errorf("BLITZ_SIDECAR_ID %q: want it from %s, one load record per sidecar", env["BLITZ_SIDECAR_ID"], tc.sidecarIDFrom)
				}
				host, _, err := net.SplitHostPort(env["BLITZ_LISTEN"])
				if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
					t.Errorf("BLITZ_LISTEN %q: want a loopback host:port", env["BLITZ_LISTEN"])
				}
			})
			t.Run("template", func(t *testing.T) {
				var found bool
				for _, tpl := range blocksOf(task.Body, "template") {
					data := j.str(t, tpl.Body, "data")
					if !strings.Contains(data, "BLITZ_CONSUL_ADDR=") {
						continue
					}
					found = true
					if !strings.Contains(data, `env "attr.unique.network.ip-address"`) {
						t.Errorf("the Consul address is not rendered from the node's address")
					}
					if dst := j.str(t, tpl.Body, "destination"); !strings.HasPrefix(dst, "secrets/") && !strings.HasPrefix(dst, "local/") {
						t.Errorf("template destination %q: want it in the task's secrets/ or local/", dst)
					}
					if v, ok := j.value(t, tpl.Body, "env"); !ok || !v.True() {
						t.Errorf("template env must be true so BLITZ_CONSUL_ADDR reaches the process")
					}
				}
				if !found {
					t.Errorf("no template renders BLITZ_CONSUL_ADDR")
				}
			})
			t.Run("flags", func(t *testing.T) {
				checkEnvNames(t, tc.file, readFile(t, tc.file))
				v, _ := j.value(t, j.oneBlock(t, task.Body, "config").Body, "args")
				var args []string
				for it := v.ElementIterator(); it.Next(); {
					_, e := it.Element()
					args = append(args, e.AsString())
				}
				checkArgs(t, tc.file, args)
			})
		})
	}
}
