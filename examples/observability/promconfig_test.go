package observability_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// k8sJob starts the commented-out Kubernetes job of prometheus.yml, which
// runs to the end of the file.
const k8sJob = "  # - job_name: kubernetes-pods\n"

// TestPrometheusConfig checks prometheus.yml: the two local jobs, and the
// commented Kubernetes job once uncommented; with promtool (Debian's
// prometheus package has it) both pass promtool check config.
func TestPrometheusConfig(t *testing.T) {
	raw, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), k8sJob)
	if i < 0 {
		t.Fatalf("prometheus.yml has no line %q", k8sJob)
	}
	var k8s strings.Builder
	k8s.Write(raw[:i])
	for _, line := range strings.SplitAfter(string(raw[i:]), "\n") {
		if line != "" && line != "\n" && !strings.HasPrefix(line, "  # ") {
			t.Fatalf("prometheus.yml: %q follows the Kubernetes job but is not part of it", line)
		}
		k8s.WriteString(strings.Replace(line, "  # ", "  ", 1))
	}
	variants := []struct {
		name, text string
		jobs       map[string]string // job → its static target, or "" for service discovery
	}{
		{name: "prometheus.yml", text: string(raw), jobs: map[string]string{
			"batchmesh-sidecar": "127.0.0.1:15000", "batchmesh-runtime": "127.0.0.1:8000", "batchmesh-controlplane": "127.0.0.1:18001"}},
		{name: "prometheus.yml with the Kubernetes job uncommented", text: k8s.String(), jobs: map[string]string{
			"batchmesh-sidecar": "127.0.0.1:15000", "batchmesh-runtime": "127.0.0.1:8000", "batchmesh-controlplane": "127.0.0.1:18001", "kubernetes-pods": ""}},
	}
	promtool, promtoolErr := exec.LookPath("promtool")
	if promtoolErr != nil {
		t.Logf("promtool is not installed (apt-get install prometheus): checking the YAML only")
	}
	for _, v := range variants {
		var cfg struct {
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
				KubernetesSD []struct {
					Role string `yaml:"role"`
				} `yaml:"kubernetes_sd_configs"`
			} `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal([]byte(v.text), &cfg); err != nil {
			t.Errorf("%s: %v", v.name, err)
			continue
		}
		got := map[string]string{}
		for _, sc := range cfg.ScrapeConfigs {
			var targets []string
			for _, s := range sc.StaticConfigs {
				targets = append(targets, s.Targets...)
			}
			switch {
			case len(targets) == 1:
				got[sc.JobName] = targets[0]
			case len(targets) == 0 && len(sc.KubernetesSD) == 1 && sc.KubernetesSD[0].Role == "pod":
				got[sc.JobName] = ""
			default:
				t.Errorf("%s: job %s: targets %q, kubernetes_sd_configs %+v", v.name, sc.JobName, targets, sc.KubernetesSD)
			}
		}
		if !maps.Equal(got, v.jobs) {
			t.Errorf("%s: jobs %q, want %q", v.name, got, v.jobs)
		}
		if promtoolErr != nil {
			continue
		}
		path := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(path, []byte(v.text), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		out, err := exec.CommandContext(ctx, promtool, "check", "config", path).CombinedOutput()
		cancel()
		switch {
		case err != nil && bytes.Contains(out, []byte("field kubernetes_sd_configs not found")):
			// Debian builds Prometheus without Kubernetes discovery.
			t.Logf("%s: this promtool has no Kubernetes discovery; the relabelling is checked below", v.name)
		case err != nil:
			t.Errorf("%s: promtool check config: %v\n%s", v.name, err, out)
		}
	}
	checkRelabel(t, k8s.String())
}

// relabelRule is one relabel_configs entry.
type relabelRule struct {
	SourceLabels []string `yaml:"source_labels"`
	Separator    *string  `yaml:"separator"`
	TargetLabel  string   `yaml:"target_label"`
	Regex        *string  `yaml:"regex"`
	Replacement  *string  `yaml:"replacement"`
	Action       string   `yaml:"action"`
}

// checkRelabel applies the Kubernetes job's relabelling to the labels
// Kubernetes discovery gives pods, and checks what is scraped.
func checkRelabel(t *testing.T, text string) {
	t.Helper()
	var cfg struct {
		ScrapeConfigs []struct {
			JobName string        `yaml:"job_name"`
			Relabel []relabelRule `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatal(err)
	}
	var rules []relabelRule
	for _, sc := range cfg.ScrapeConfigs {
		if sc.JobName == "kubernetes-pods" {
			rules = sc.Relabel
		}
	}
	pod := func(annotations map[string]string) map[string]string {
		l := map[string]string{
			"__address__": "10.1.2.3:8080", "__metrics_path__": "/metrics",
			"__meta_kubernetes_namespace": "shop", "__meta_kubernetes_pod_name": "api-7d9f",
			"__meta_kubernetes_pod_label_app_kubernetes_io_name": "api",
		}
		for k, v := range annotations {
			l["__meta_kubernetes_pod_annotation_"+k] = v
		}
		return l
	}
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string // nil: dropped
	}{
		{name: "sidecar admin", in: pod(map[string]string{"prometheus_io_scrape": "true", "prometheus_io_port": "15000"}),
			want: map[string]string{"__address__": "10.1.2.3:15000", "__metrics_path__": "/metrics", "namespace": "shop", "pod": "api-7d9f", "app": "api"}},
		{name: "runtime with a path", in: pod(map[string]string{"prometheus_io_scrape": "true", "prometheus_io_port": "8000", "prometheus_io_path": "/m"}),
			want: map[string]string{"__address__": "10.1.2.3:8000", "__metrics_path__": "/m", "namespace": "shop", "pod": "api-7d9f", "app": "api"}},
		{name: "not annotated", in: pod(nil), want: nil},
	}
	for _, tt := range tests {
		got, err := relabel(tt.in, rules)
		if err != nil {
			t.Fatalf("kubernetes-pods relabel_configs: %v", err)
		}
		if tt.want == nil {
			if got != nil {
				t.Errorf("%s: kept, want dropped", tt.name)
			}
			continue
		}
		if got == nil {
			t.Errorf("%s: dropped", tt.name)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, got[k], v)
			}
		}
	}
}

// relabel applies Prometheus's keep and replace relabelling (regexes
// anchored at both ends, as Prometheus does) and returns the labels, or
// nil when the target is dropped.
func relabel(in map[string]string, rules []relabelRule) (map[string]string, error) {
	l := maps.Clone(in)
	for _, r := range rules {
		sep, regex, repl := ";", "(.*)", "$1"
		if r.Separator != nil {
			sep = *r.Separator
		}
		if r.Regex != nil {
			regex = *r.Regex
		}
		if r.Replacement != nil {
			repl = *r.Replacement
		}
		re, err := regexp.Compile("^(?:" + regex + ")$")
		if err != nil {
			return nil, err
		}
		var vals []string
		for _, s := range r.SourceLabels {
			vals = append(vals, l[s])
		}
		val := strings.Join(vals, sep)
		switch r.Action {
		case "keep":
			if !re.MatchString(val) {
				return nil, nil
			}
		case "", "replace":
			m := re.FindStringSubmatchIndex(val)
			if m == nil {
				continue
			}
			if r.TargetLabel == "" {
				return nil, fmt.Errorf("replace without target_label")
			}
			l[r.TargetLabel] = string(re.ExpandString(nil, repl, val, m))
		default:
			return nil, fmt.Errorf("action %q: the test knows keep and replace only", r.Action)
		}
	}
	return l, nil
}
