package depcheck_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// A rule forbids the packages matched by pkgs (less those matched by except)
// to import anything matched by forbid (less what allow matches).
//
// Patterns:
//   - "./internal/codec/..." is relative to this module; "./..." is all of it.
//   - "github.com/valyala/fasthttp/..." is an import path; as with the go
//     command, "x/..." matches x and every package below it.
//   - "std" matches the standard library; "!P" matches what P does not.
type rule struct {
	pkgs   []string
	except []string
	forbid []string
	allow  []string
	// deep checks every transitive dependency, not only direct imports.
	deep bool
	why  string
}

// stages lists the data-plane stages; see stageRule.
var stages = []string{
	"./internal/codec/...",
	"./internal/cache/...",
	"./internal/batch/...",
	"./internal/balancer/...",
	"./internal/upstream/...",
}

// rules is the import policy of docs/architecture.md (Import rules). A package that does not
// exist yet matches nothing. Test imports are not checked.
var rules = []rule{
	{
		pkgs:   []string{"./internal/inference/..."},
		forbid: []string{"!std"},
		allow:  []string{"./internal/inference/..."},
		deep:   true,
		why:    "inference is the shared vocabulary of every stage; it depends on the standard library alone",
	},
	stageRule("./internal/codec/...", "codec decodes for the next stage; proxy wires the stages"),
	stageRule("./internal/cache/...", "cache does not know how rows arrive or leave; proxy wires the stages"),
	stageRule("./internal/batch/...", "batch hands batches to an interface it declares; proxy wires the stages"),
	stageRule("./internal/balancer/...", "balancer only picks endpoints; proxy wires the stages"),
	stageRule("./internal/upstream/...", "upstream may encode with codec, but knows no other stage",
		"./internal/codec/..."),
	{
		pkgs:   []string{"./internal/..."},
		except: []string{"./internal/telemetry/...", "./internal/modelrt/..."},
		forbid: []string{"go.opentelemetry.io/otel/sdk/..."},
		why:    "libraries use the OpenTelemetry API; the SDK is set up by internal/telemetry for the binaries",
	},
	{
		pkgs:   []string{"./internal/..."},
		forbid: []string{"./sidecar/...", "./controlplane/...", "./model/...", "./examples/..."},
		why:    "binaries and examples wire internal packages, never the other way round",
	},
	{
		pkgs: []string{"./..."},
		except: []string{
			"./internal/proxy/...", "./internal/sidecar/...", "./internal/upstream/...", "./internal/modelrt/...", "./internal/loadgen/...",
			"./internal/capture/...",
			"./sidecar/...", "./controlplane/...", "./model/...", "./examples/...",
		},
		forbid: []string{"github.com/valyala/fasthttp/..."},
		why:    "fasthttp stays at the edge: proxy, upstream and capture copy out of it into owned values",
	},
	{
		pkgs:   []string{"./..."},
		except: []string{"./internal/runtimetest/...", "./internal/sidecartest/...", "./internal/netnstest/...", "./internal/apiservertest/...", "./internal/certtest/...", "./internal/nodetest/..."},
		forbid: []string{"./internal/runtimetest/...", "./internal/sidecartest/...", "./internal/netnstest/...", "./internal/apiservertest/...", "./internal/certtest/...", "./internal/nodetest/..."},
		why:    "runtimetest, sidecartest, netnstest, apiservertest, certtest and nodetest start runtimes, sidecars, network namespaces and API servers, make throwaway CAs or install Node clients, for tests; only _test.go files may import them",
	},
	{
		pkgs:   []string{"./internal/redirect/..."},
		forbid: []string{"./internal/..."},
		allow:  []string{"./internal/redirect/..."},
		deep:   true,
		why:    "redirect writes kernel rules from its options; it knows nothing of the data plane",
	},
	{
		pkgs:   []string{"./internal/capture/..."},
		forbid: []string{"./internal/..."},
		allow:  []string{"./internal/capture/...", "./internal/rawconn/..."},
		deep:   true,
		why:    "capture moves connections; what a request means is the proxy's, asked through Router.Serves",
	},
	{
		pkgs:   []string{"./internal/rawconn/..."},
		forbid: []string{"./internal/...", "github.com/..."},
		allow:  []string{"./internal/rawconn/..."},
		deep:   true,
		why:    "rawconn is a TCP connection with cheaper system calls; it knows nothing of HTTP or the mesh",
	},
	{
		pkgs:   []string{"./internal/inject/..."},
		forbid: []string{"./internal/..."},
		allow:  []string{"./internal/inject/...", "./internal/redirect/..."},
		deep:   true,
		why:    "inject is the pod template: it checks ports with redirect's parser and knows nothing else of the mesh",
	},
	{
		pkgs:   []string{"./..."},
		except: []string{"./internal/inject/...", "./internal/discovery/...", "./controlplane/...", "./examples/..."},
		forbid: []string{"k8s.io/...", "sigs.k8s.io/...", "gomodules.xyz/..."},
		deep:   true,
		why:    "the Kubernetes API types and client stay in the injector, discovery and the control plane: the sidecar and model binaries do without them",
	},
	{
		pkgs:   []string{"./internal/discovery/..."},
		forbid: []string{"./internal/..."},
		allow:  []string{"./internal/discovery/...", "./internal/config/..."},
		deep:   true,
		why:    "discovery turns Services and EndpointSlices into config versions; it knows nothing else of the mesh",
	},
	{
		pkgs:   []string{"./..."},
		except: []string{"./internal/discovery/...", "./controlplane/..."},
		forbid: []string{"./internal/discovery/..."},
		why:    "only the control plane watches Kubernetes: client-go must not reach the sidecar binary",
	},
}

// stageRule forbids stage to import any other stage but those in allowed;
// any stage may import inference, which is not a stage.
func stageRule(stage, why string, allowed ...string) rule {
	var forbid []string
	for _, s := range stages {
		if s != stage && !slices.Contains(allowed, s) {
			forbid = append(forbid, s)
		}
	}
	return rule{
		pkgs:   []string{stage},
		forbid: forbid,
		deep:   true,
		why:    why,
	}
}

// pkg is the part of `go list -json` output the rules read.
type pkg struct {
	ImportPath string
	Name       string
	Standard   bool
	Imports    []string
	Deps       []string
	Module     *struct {
		Path string
		Main bool
	}
	Error *struct{ Err string }
}

// graph is a module's packages and all their dependencies.
type graph struct {
	module string          // the main module's path
	pkgs   map[string]*pkg // by import path
}

func (g *graph) own() []string {
	var own []string
	for path, p := range g.pkgs {
		if p.Module != nil && p.Module.Main {
			own = append(own, path)
		}
	}
	slices.Sort(own)
	return own
}

func (g *graph) match(pattern, path string) bool {
	if neg, ok := strings.CutPrefix(pattern, "!"); ok {
		return !g.match(neg, path)
	}
	if pattern == "std" {
		p := g.pkgs[path]
		return path == "C" || p != nil && p.Standard
	}
	if rel, ok := strings.CutPrefix(pattern, "./"); ok {
		pattern = g.module + "/" + rel
	}
	return matchPath(pattern, path)
}

func (g *graph) matchAny(patterns []string, path string) bool {
	return slices.ContainsFunc(patterns, func(pat string) bool { return g.match(pat, path) })
}

// matchPath reports whether path matches pattern, where "..." matches any
// string and a trailing "/..." also matches the empty string, as in the go
// command's package patterns.
func matchPath(pattern, path string) bool {
	re := regexp.QuoteMeta(pattern)
	re = strings.ReplaceAll(re, `\.\.\.`, `.*`)
	if r, ok := strings.CutSuffix(re, `/.*`); ok {
		re = r + `(/.*)?`
	}
	return regexp.MustCompile(`^` + re + `$`).MatchString(path)
}

// chain returns the import chain from → … → to, following Imports.
func (g *graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var c []string
			for ; cur != ""; cur = prev[cur] {
				c = append(c, cur)
			}
			slices.Reverse(c)
			return c
		}
		if p := g.pkgs[cur]; p != nil {
			for _, next := range p.Imports {
				if _, seen := prev[next]; !seen {
					prev[next] = cur
					queue = append(queue, next)
				}
			}
		}
	}
	return []string{from, "…", to}
}

type violation struct {
	pkg, imp string
	rule     *rule
}

// check returns every import of g's own packages that a rule forbids, in a
// stable order.
func check(g *graph, rules []rule) []violation {
	var vs []violation
	for _, path := range g.own() {
		p := g.pkgs[path]
		for i := range rules {
			r := &rules[i]
			if !g.matchAny(r.pkgs, path) || g.matchAny(r.except, path) {
				continue
			}
			imps := p.Imports
			if r.deep {
				imps = p.Deps
			}
			for _, imp := range imps {
				if g.matchAny(r.forbid, imp) && !g.matchAny(r.allow, imp) {
					vs = append(vs, violation{pkg: path, imp: imp, rule: r})
				}
			}
		}
	}
	return vs
}

// goList loads the graph of the module around the working directory.
func goList(t *testing.T) *graph {
	t.Helper()
	var mod struct{ Path, Dir string }
	out := run(t, "", "go", "list", "-m", "-json")
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	out = run(t, mod.Dir, "go", "list", "-e", "-deps",
		"-json=ImportPath,Name,Standard,Imports,Deps,Module,Error", "./...")
	g := &graph{module: mod.Path, pkgs: map[string]*pkg{}}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		p := new(pkg)
		err := dec.Decode(p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("go list -deps: %v", err)
		}
		g.pkgs[p.ImportPath] = p
	}
	return g
}

func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func TestImportGraph(t *testing.T) {
	g := goList(t)
	own := g.own()
	self := g.module + "/internal/depcheck"
	if !slices.Contains(own, self) {
		t.Fatalf("go list found %d packages of %s, not %s itself: %q", len(own), g.module, self, own)
	}
	for _, path := range own {
		if p := g.pkgs[path]; p.Error != nil {
			t.Logf("%s: go list: %s (its imports may be incomplete)", path, p.Error.Err)
		}
	}
	for i, r := range rules {
		if !slices.ContainsFunc(own, func(path string) bool { return g.matchAny(r.pkgs, path) }) {
			t.Logf("rule %d (%s) matches no package yet", i, r.pkgs)
		}
	}
	short := func(path string) string { return strings.TrimPrefix(path, g.module+"/") }
	for _, v := range check(g, rules) {
		msg := fmt.Sprintf("%s imports %s: %s", short(v.pkg), short(v.imp), v.rule.why)
		if c := g.chain(v.pkg, v.imp); len(c) > 2 {
			for i := range c {
				c[i] = short(c[i])
			}
			msg += "\n\tvia " + strings.Join(c, " → ")
		}
		t.Error(msg)
	}
}

func TestMatch(t *testing.T) {
	g := &graph{
		module: "example.com/m",
		pkgs: map[string]*pkg{
			"fmt":            {ImportPath: "fmt", Standard: true},
			"internal/bytes": {ImportPath: "internal/bytes", Standard: true},
		},
	}
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{pattern: "std", path: "fmt", want: true},
		{pattern: "std", path: "internal/bytes", want: true},
		{pattern: "std", path: "C", want: true},
		{pattern: "std", path: "github.com/valyala/fasthttp", want: false},
		{pattern: "!std", path: "github.com/valyala/fasthttp", want: true},
		{pattern: "!std", path: "fmt", want: false},
		{pattern: "./internal/codec/...", path: "example.com/m/internal/codec", want: true},
		{pattern: "./internal/codec/...", path: "example.com/m/internal/codec/v2", want: true},
		{pattern: "./internal/codec/...", path: "example.com/m/internal/codecx", want: false},
		{pattern: "./internal/codec/...", path: "internal/codec", want: false},
		{pattern: "./model/...", path: "example.com/m/internal/modelrt", want: false},
		{pattern: "./model/...", path: "example.com/m/model", want: true},
		{pattern: "./...", path: "example.com/m", want: true},
		{pattern: "./...", path: "example.com/m/sidecar", want: true},
		{pattern: "./...", path: "example.com/mm", want: false},
		{pattern: "go.opentelemetry.io/otel/sdk/...", path: "go.opentelemetry.io/otel/sdk/metric", want: true},
		{pattern: "go.opentelemetry.io/otel/sdk/...", path: "go.opentelemetry.io/otel/sdk", want: true},
		{pattern: "go.opentelemetry.io/otel/sdk/...", path: "go.opentelemetry.io/otel/metric", want: false},
		{pattern: "go.opentelemetry.io/otel/sdk/...", path: "go.opentelemetry.io/auto/sdk", want: false},
		{pattern: "github.com/valyala/fasthttp/...", path: "github.com/valyala/fasthttp/fasthttputil", want: true},
		{pattern: "github.com/valyala/fasthttp/...", path: "github.com/valyala/fasthttprouter", want: false},
		{pattern: "a.b/x...y", path: "a.b/x/z/y", want: true},
		{pattern: "a.b/x.y", path: "a.b/xzy", want: false},
	}
	for _, tt := range tests {
		if got := g.match(tt.pattern, tt.path); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

// TestRules runs the real rule table on a synthetic module with one allowed
// and one forbidden import for each rule, so the check is seen to fail.
func TestRules(t *testing.T) {
	const m = "example.com/m"
	std := []string{"fmt", "io", "unsafe"}
	g := &graph{module: m, pkgs: map[string]*pkg{}}
	add := func(path string, imports ...string) {
		name := path[strings.LastIndex(path, "/")+1:]
		if path == m+"/sidecar" {
			name = "main"
		}
		g.pkgs[path] = &pkg{ImportPath: path, Name: name, Imports: imports}
		if strings.HasPrefix(path, m) {
			g.pkgs[path].Module = &struct {
				Path string
				Main bool
			}{Path: m, Main: true}
		}
	}
	for _, s := range std {
		add(s)
		g.pkgs[s].Standard = true
	}
	add("github.com/x/dep")
	add("github.com/valyala/fasthttp", "github.com/x/dep")
	add("go.opentelemetry.io/otel/metric")
	add("go.opentelemetry.io/otel/sdk/metric", "go.opentelemetry.io/otel/metric")

	add(m+"/internal/inference", "fmt", m+"/internal/inference/shape")
	add(m+"/internal/inference/shape", "io", "github.com/x/dep") // deep: inference → shape → dep
	add(m+"/internal/codec", m+"/internal/inference", m+"/internal/cache")
	add(m+"/internal/cache", m+"/internal/inference", "github.com/valyala/fasthttp")
	add(m+"/internal/batch", "go.opentelemetry.io/otel/metric", "go.opentelemetry.io/otel/sdk/metric")
	add(m+"/internal/balancer", m+"/internal/proxy") // deep: balancer → proxy → upstream
	add(m+"/internal/upstream", m+"/internal/codec", "github.com/valyala/fasthttp")
	add(m+"/internal/proxy", m+"/internal/upstream", m+"/internal/batch", "github.com/valyala/fasthttp")
	add(m+"/internal/telemetry", "go.opentelemetry.io/otel/sdk/metric")
	add(m+"/internal/xdsclient", m+"/examples/demo/config")
	add(m+"/examples/demo/config", "github.com/valyala/fasthttp")
	add(m+"/sidecar", m+"/internal/proxy", m+"/internal/telemetry", "github.com/valyala/fasthttp")
	add(m+"/internal/runtimetest", m+"/internal/telemetry")
	add(m+"/controlplane", m+"/internal/runtimetest")

	// Deps as `go list -deps` gives them: the transitive closure of Imports.
	var deps func(path string, seen map[string]bool)
	deps = func(path string, seen map[string]bool) {
		for _, imp := range g.pkgs[path].Imports {
			if !seen[imp] {
				seen[imp] = true
				deps(imp, seen)
			}
		}
	}
	for path, p := range g.pkgs {
		seen := map[string]bool{}
		deps(path, seen)
		for d := range seen {
			p.Deps = append(p.Deps, d)
		}
		slices.Sort(p.Deps)
	}

	var got []string
	for _, v := range check(g, rules) {
		got = append(got, strings.TrimPrefix(v.pkg, m+"/")+" -> "+strings.TrimPrefix(v.imp, m+"/"))
	}
	want := []string{
		// balancer reaches batch, upstream, codec and cache through proxy.
		"internal/balancer -> internal/batch",
		"internal/balancer -> internal/cache",
		"internal/balancer -> internal/codec",
		"internal/balancer -> internal/upstream",
		"internal/batch -> go.opentelemetry.io/otel/sdk/metric",
		"internal/cache -> github.com/valyala/fasthttp",
		"internal/codec -> internal/cache",
		"internal/inference -> github.com/x/dep",
		"internal/inference/shape -> github.com/x/dep",
		"internal/upstream -> internal/cache", // through codec
		"internal/xdsclient -> examples/demo/config",
		"controlplane -> internal/runtimetest",
	}
	// Not reported: codec reaches fasthttp only through cache, and the
	// fasthttp rule checks direct imports; upstream → codec is allowed; the
	// SDK in telemetry and fasthttp in proxy, upstream and the binaries are;
	// runtimetest may import telemetry.
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("check found:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if c := g.chain(m+"/internal/balancer", m+"/internal/codec"); len(c) != 4 {
		t.Errorf("chain(balancer, codec) = %q, want balancer → proxy → upstream → codec", c)
	}
}
