package observability_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/batchmesh/batchmesh/internal/loadgen"
)

// TestPrometheusScrapes runs a real Prometheus server (Debian's prometheus
// package; .ci/run installs it) against the sidecar's admin /metrics and
// the runtime's /metrics, and queries its HTTP API after load.
func TestPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("prometheus is not installed, but CI is set: .ci/run should install it (APT_PACKAGES): %v", err)
		}
		t.Skip("prometheus is not installed: apt-get install prometheus (Debian/Ubuntu), or put a prometheus binary on PATH")
	}
	st := startStack(t)
	prom := startPrometheus(t, bin, strings.TrimPrefix(st.adminURL, "http://"), strings.TrimPrefix(st.runtimeURL, "http://"))

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	prom.waitReady(ctx, t)
	res := st.load(t, cachedModel, loadgen.Config{Clients: 8, Requests: 400, Repeat: 0.25})
	if res.ByStatus[http.StatusOK] == 0 {
		t.Fatalf("no request succeeded: %v (first error %q)", res.ByStatus, res.FirstError)
	}

	checks := []struct {
		query string
		ok    func(v float64) bool
		want  string
	}{
		{query: "batchmesh_queue_depth", ok: func(float64) bool { return true }, want: "present"},
		{query: "sum(batchmesh_batch_rows_bucket)", ok: func(v float64) bool { return v > 0 }, want: "> 0"},
		{query: "sum(model_rows_total)", ok: func(v float64) bool { return v > 0 }, want: "> 0"},
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for _, c := range checks {
		for {
			v, found, err := prom.query(ctx, c.query)
			if err == nil && found && c.ok(v) {
				t.Logf("%s = %g", c.query, v)
				break
			}
			select {
			case <-ctx.Done():
				up, _, upErr := prom.query(context.Background(), "sum(up)")
				t.Fatalf("after 30s, %s: want %s; last answer %g (found %v, error %v); sum(up) = %g (%v) of 2 targets",
					c.query, c.want, v, found, err, up, upErr)
			case <-tick.C:
			}
		}
	}
}

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
			"batchmesh-sidecar": "127.0.0.1:15000", "batchmesh-runtime": "127.0.0.1:8000"}},
		{name: "prometheus.yml with the Kubernetes job uncommented", text: k8s.String(), jobs: map[string]string{
			"batchmesh-sidecar": "127.0.0.1:15000", "batchmesh-runtime": "127.0.0.1:8000", "kubernetes-pods": ""}},
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

// prometheus is a Prometheus server of the test's own.
type prometheus struct {
	url    string
	exited chan struct{} // closed when the process has ended
	out    *syncBuffer
}

// startPrometheus starts bin scraping the two targets every second, with
// its storage in a temporary directory, and kills it at cleanup. Its
// output is logged if the test fails.
func startPrometheus(t *testing.T, bin string, sidecarAdmin, runtime string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: batchmesh-sidecar
    static_configs: [{targets: [%q]}]
  - job_name: batchmesh-runtime
    static_configs: [{targets: [%q]}]
`, sidecarAdmin, runtime)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{url: "http://" + addr, exited: make(chan struct{}), out: out}
	go func() { defer close(p.exited); _ = cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	return p
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitReady polls /-/ready until Prometheus answers 200 or ctx ends.
func (p *prometheus) waitReady(ctx context.Context, t *testing.T) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/-/ready", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("prometheus at %s not ready: %v", p.url, err)
		case <-p.exited:
			t.Fatalf("prometheus exited before it was ready:\n%s", p.out.String())
		case <-tick.C:
		}
	}
}

// query runs an instant query and returns the value of its first sample;
// found is false when the result is empty.
func (p *prometheus) query(ctx context.Context, q string) (v float64, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/api/v1/query?query="+url.QueryEscape(q), nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, false, fmt.Errorf("query %q: %s: %w", q, resp.Status, err)
	}
	if body.Status != "success" {
		return 0, false, fmt.Errorf("query %q: %s: %s", q, body.Status, body.Error)
	}
	if body.Data.ResultType != "vector" {
		return 0, false, fmt.Errorf("query %q: result type %q, want vector", q, body.Data.ResultType)
	}
	if len(body.Data.Result) == 0 {
		return 0, false, nil
	}
	s, ok := body.Data.Result[0].Value[1].(string)
	if !ok {
		return 0, false, fmt.Errorf("query %q: sample value %v is not a string", q, body.Data.Result[0].Value[1])
	}
	v, err = strconv.ParseFloat(s, 64)
	return v, true, err
}

// syncBuffer is a bytes.Buffer that the process's output copier and the
// test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
