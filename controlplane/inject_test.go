package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchmesh/batchmesh/internal/version"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/inject")

// injectGolden runs `controlplane inject` on testdata/inject/NAME.in.yaml
// with args and compares its output, the version replaced by VERSION, with
// NAME.golden.yaml.
func injectGolden(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	in := filepath.Join("testdata", "inject", name+".in.yaml")
	var stdout, stderr bytes.Buffer
	args = append([]string{"-f", in, "-image", "batchmesh:test"}, args...)
	if err := runInject(args, nil, &stdout, &stderr); err != nil {
		t.Fatalf("inject %q: %v\n%s", args, err, stderr.String())
	}
	got := []byte(strings.ReplaceAll(stdout.String(), `"version":"`+version.String()+`"`, `"version":"VERSION"`))
	golden := filepath.Join("testdata", "inject", name+".golden.yaml")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./controlplane -run TestInject -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("inject %s differs from %s (-update rewrites it):\n%s", in, golden, got)
	}
	return stderr.Bytes()
}

func TestInjectGolden(t *testing.T) {
	log := injectGolden(t, "workloads", "-config", filepath.Join("testdata", "inject", "config.yaml"))
	for _, want := range []string{
		"Pod client: injected", "Deployment web: injected", "StatefulSet db-client: injected",
		"DaemonSet node-agent: left alone: host network",
		"ReplicaSet opted-out: left alone: pod label batchmesh.io/inject=false",
		"Job embed-corpus: injected", "CronJob nightly: injected",
	} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if bytes.Contains(log, []byte("ConfigMap")) {
		t.Errorf("a ConfigMap is not reported:\n%s", log)
	}
}

// TestInjectIdempotent injects the golden output again: nothing changes.
func TestInjectIdempotent(t *testing.T) {
	golden := filepath.Join("testdata", "inject", "workloads.golden.yaml")
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.yaml")
	var stderr bytes.Buffer
	if err := runInject([]string{"-f", golden, "-o", out, "-inject-ports", "1"}, nil, &bytes.Buffer{}, &stderr); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("injecting injected workloads changed them:\n%s", got)
	}
	if n := bytes.Count(stderr.Bytes(), []byte("already injected")); n != 5 {
		t.Errorf("%d documents reported already injected; want 5:\n%s", n, stderr.String())
	}
}

func TestInjectErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: ConfigMap\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {batchmesh.io/ports: http}\nspec:\n  containers: [{name: a, image: a}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	noTemplate := filepath.Join(dir, "notemplate.yaml")
	if err := os.WriteFile(noTemplate, []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{nil, "inject: -f FILE is required"},
		{[]string{"-f", bad, "-inject-ports", "8000"}, `inject: document 2 (Pod p): annotation batchmesh.io/ports: "http"`},
		{[]string{"-f", bad}, "inject: document 2 (Pod p): annotation batchmesh.io/ports"},
		{[]string{"-f", noTemplate, "-inject-ports", "8000"}, "inject: document 1 (Deployment d): .spec.template: want a mapping"},
		{[]string{"-f", bad, "-inject-ports", "x"}, `inject: -inject-ports "x"`},
		{[]string{"-f", bad, "-inject-xds", "nohost"}, `inject: -inject-xds "nohost": want host:port`},
		{[]string{"-f", bad, "-image", ""}, "inject: -image is required"},
		{[]string{"-f", filepath.Join(dir, "absent.yaml")}, "inject: -f: open"},
	}
	for _, tt := range tests {
		err := runInject(tt.args, nil, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("inject %q: error %v; want %q", tt.args, err, tt.want)
		}
	}
}

func TestInjectStdin(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: a}]\n"
	var stdout bytes.Buffer
	if err := runInject([]string{"-f", "-", "-inject-ports", "8000"}, strings.NewReader(in), &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "name: batchmesh-sidecar") || strings.Contains(stdout.String(), "postStart") {
		t.Fatalf("pod from standard input not injected with a native sidecar:\n%s", stdout.String())
	}
	stdout.Reset()
	if err := runInject([]string{"-f", "-", "-inject-ports", "8000", "-inject-legacy-sidecar"}, strings.NewReader(in), &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "postStart") || strings.Contains(stdout.String(), "restartPolicy: Always") {
		t.Fatalf("-inject-legacy-sidecar: no postStart wait, or a native sidecar:\n%s", stdout.String())
	}
}
