// Package kubernetes_test checks the autoscaling examples in this
// directory: every document parses, has the fields its controller needs and
// names the same Deployment, and every batchmesh_* or model_* metric the
// files mention (queries, adapter rules and comments alike) is one that a
// live runtime and sidecar export.
package kubernetes_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadgen"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// The example scales this Deployment, serving this model.
const (
	deployment = "bert-base-runtime"
	modelName  = "bert-base"
)

// object is the part of a Kubernetes object the tests read.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec yaml.Node         `yaml:"spec"`
}

// decodeAll returns every document of a YAML file.
func decodeAll(t *testing.T, path string) []object {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []object
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(out)+1, err)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: document %d: apiVersion %q, kind %q, metadata.name %q: all are required", path, len(out)+1, o.APIVersion, o.Kind, o.Metadata.Name)
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no YAML document", path)
	}
	return out
}

// targetRef is a scaleTargetRef.
type targetRef struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Name       string `yaml:"name"`
}

func decodeSpec(t *testing.T, o object, v any) {
	t.Helper()
	if err := o.Spec.Decode(v); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
}

// positive parses a threshold such as "64" or "0.5" and checks it is > 0
// (≥ 0 when zeroOK).
func positive(t *testing.T, what, s string, zeroOK bool) {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v == 0 && !zeroOK {
		t.Errorf("%s: %q is not a positive number", what, s)
	}
}

func TestKEDAScaledObject(t *testing.T) {
	objs := decodeAll(t, "keda-scaledobject.yaml")
	if len(objs) != 1 || objs[0].APIVersion != "keda.sh/v1alpha1" || objs[0].Kind != "ScaledObject" {
		t.Fatalf("want one keda.sh/v1alpha1 ScaledObject, got %+v", objs)
	}
	var spec struct {
		ScaleTargetRef  targetRef `yaml:"scaleTargetRef"`
		MinReplicaCount *int      `yaml:"minReplicaCount"`
		MaxReplicaCount int       `yaml:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `yaml:"type"`
			Metadata map[string]string `yaml:"metadata"`
		} `yaml:"triggers"`
	}
	decodeSpec(t, objs[0], &spec)
	if ref := spec.ScaleTargetRef; ref.Name != deployment || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
		t.Errorf("scaleTargetRef %+v, want apps/v1 Deployment %s", ref, deployment)
	}
	if spec.MinReplicaCount == nil || *spec.MinReplicaCount < 0 || spec.MaxReplicaCount < max(*spec.MinReplicaCount, 1) {
		t.Errorf("minReplicaCount %v, maxReplicaCount %d: want 0 ≤ min ≤ max, max ≥ 1", spec.MinReplicaCount, spec.MaxReplicaCount)
	}
	var onQueue bool
	for i, tr := range spec.Triggers {
		md := tr.Metadata
		if tr.Type != "prometheus" {
			t.Errorf("trigger %d: type %q, want prometheus", i, tr.Type)
			continue
		}
		if u, err := url.Parse(md["serverAddress"]); err != nil || u.Scheme == "" || u.Host == "" {
			t.Errorf("trigger %d: serverAddress %q is not a URL", i, md["serverAddress"])
		}
		positive(t, fmt.Sprintf("trigger %d threshold", i), md["threshold"], false)
		if a, ok := md["activationThreshold"]; ok {
			positive(t, fmt.Sprintf("trigger %d activationThreshold", i), a, true)
		}
		if md["query"] == `sum(batchmesh_queue_depth{model="`+modelName+`"})` {
			onQueue = true
		}
	}
	if !onQueue {
		t.Errorf(`no prometheus trigger with the query sum(batchmesh_queue_depth{model=%q})`, modelName)
	}
}

func TestHPAPrometheusAdapter(t *testing.T) {
	objs := decodeAll(t, "hpa-prometheus-adapter.yaml")
	exposed := map[string]bool{} // external metric names the adapter serves
	var hpas int
	for _, o := range objs {
		switch {
		case o.APIVersion == "v1" && o.Kind == "ConfigMap":
			text, ok := o.Data["config.yaml"]
			if !ok {
				t.Fatalf("ConfigMap %s has no config.yaml", o.Metadata.Name)
			}
			var cfg struct {
				ExternalRules []struct {
					SeriesQuery  string `yaml:"seriesQuery"`
					MetricsQuery string `yaml:"metricsQuery"`
					Resources    struct {
						Namespaced *bool                        `yaml:"namespaced"`
						Overrides  map[string]map[string]string `yaml:"overrides"`
						Template   string                       `yaml:"template"`
					} `yaml:"resources"`
					Name struct {
						Matches string `yaml:"matches"`
						As      string `yaml:"as"`
					} `yaml:"name"`
				} `yaml:"externalRules"`
			}
			dec := yaml.NewDecoder(strings.NewReader(text))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				t.Fatalf("ConfigMap %s: config.yaml: %v", o.Metadata.Name, err)
			}
			for i, r := range cfg.ExternalRules {
				re, err := regexp.Compile(r.Name.Matches)
				if err != nil || r.SeriesQuery == "" || !strings.Contains(r.MetricsQuery, "<<.Series>>") || !strings.Contains(r.MetricsQuery, "<<.LabelMatchers>>") {
					t.Errorf("externalRules[%d]: %+v: want a seriesQuery, a metricsQuery using <<.Series>> and <<.LabelMatchers>>, and a valid name.matches (%v)", i, r, err)
					continue
				}
				series, _, _ := strings.Cut(r.SeriesQuery, "{")
				if !re.MatchString(series) {
					t.Errorf("externalRules[%d]: name.matches %q does not match the series %q", i, r.Name.Matches, series)
				}
				if ns := r.Resources.Namespaced; ns == nil || *ns {
					// The sidecars live in the applications' namespaces.
					t.Errorf("externalRules[%d]: resources.namespaced must be false, or only sidecars in the HPA's namespace count", i)
				}
				exposed[r.Name.As] = true
			}
		case o.APIVersion == "autoscaling/v2" && o.Kind == "HorizontalPodAutoscaler":
			hpas++
			var spec struct {
				ScaleTargetRef targetRef `yaml:"scaleTargetRef"`
				MinReplicas    int       `yaml:"minReplicas"`
				MaxReplicas    int       `yaml:"maxReplicas"`
				Metrics        []struct {
					Type     string `yaml:"type"`
					External struct {
						Metric struct {
							Name     string `yaml:"name"`
							Selector struct {
								MatchLabels map[string]string `yaml:"matchLabels"`
							} `yaml:"selector"`
						} `yaml:"metric"`
						Target struct {
							Type         string `yaml:"type"`
							AverageValue string `yaml:"averageValue"`
						} `yaml:"target"`
					} `yaml:"external"`
				} `yaml:"metrics"`
			}
			decodeSpec(t, o, &spec)
			if ref := spec.ScaleTargetRef; ref.Name != deployment || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
				t.Errorf("scaleTargetRef %+v, want apps/v1 Deployment %s", ref, deployment)
			}
			if spec.MinReplicas < 1 || spec.MaxReplicas < spec.MinReplicas {
				t.Errorf("minReplicas %d, maxReplicas %d", spec.MinReplicas, spec.MaxReplicas)
			}
			var onQueue bool
			for i, m := range spec.Metrics {
				ext := m.External
				if m.Type != "External" || !exposed[ext.Metric.Name] {
					t.Errorf("metrics[%d]: %s metric %q: want an External metric the adapter's rules expose (%v)", i, m.Type, ext.Metric.Name, exposed)
					continue
				}
				if ext.Target.Type != "AverageValue" {
					t.Errorf("metrics[%d]: target type %q, want AverageValue (per replica)", i, ext.Target.Type)
				}
				positive(t, fmt.Sprintf("metrics[%d] averageValue", i), ext.Target.AverageValue, false)
				if ext.Metric.Name == "batchmesh_queue_depth" && ext.Metric.Selector.MatchLabels["model"] == modelName {
					onQueue = true
				}
			}
			if !onQueue {
				t.Errorf("the HPA does not scale on batchmesh_queue_depth with the selector model=%s", modelName)
			}
		default:
			t.Errorf("unexpected %s %s", o.APIVersion, o.Kind)
		}
	}
	if hpas != 1 {
		t.Errorf("%d HorizontalPodAutoscalers, want 1", hpas)
	}
}

// metricRE matches what looks like a batchmesh or runtime metric name.
var metricRE = regexp.MustCompile(`\b(?:batchmesh|model)_[a-z0-9_]*[a-z0-9]\b`)

// TestReferencedMetricsExist scans every YAML file here, comments
// included, for batchmesh_* and model_* names, and checks each against
// the scrape of a live runtime and sidecar after a little load.
func TestReferencedMetricsExist(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no YAML files here (%v)", err)
	}
	exist := liveSeriesNames(t)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range metricRE.FindAllString(string(raw), -1) {
			if !exist[name] {
				t.Errorf("%s mentions %s, which neither the sidecar nor the runtime exports", f, name)
			}
		}
	}
}

// liveSeriesNames starts a runtime and a sidecar on loopback, sends a few
// batched requests, and returns the series names both export (histograms
// as _bucket, _sum and _count).
func liveSeriesNames(t *testing.T) map[string]bool {
	t.Helper()
	models := runtimetest.Models(t, modelName+"=sim:linear/1ms+0s")
	rt := runtimetest.Start(t, modelrt.Config{Models: models}, runtimetest.WithMetrics()).Addr
	cfg, err := config.Parse("k8s.yaml", fmt.Appendf(nil, `models:
  - name: %s
    batching: {max_batch_size: 64, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, modelName, rt))
	if err != nil {
		t.Fatal(err)
	}
	sc := sidecartest.Start(t, sidecar.Config{Models: cfg, Source: "k8s.yaml"})
	res, err := loadgen.Run(t.Context(), loadgen.Config{
		URL: sc.URL + "/v2/models/" + modelName + "/infer", Clients: 4, Requests: 40})
	if err != nil {
		t.Fatal(err)
	}
	if res.ByStatus[http.StatusOK] == 0 {
		t.Fatalf("no request succeeded: %v (first error %q)", res.ByStatus, res.FirstError)
	}
	out := map[string]bool{}
	for _, u := range []string{sc.AdminURL + "/metrics", "http://" + rt + "/metrics"} {
		for name, f := range scrape(t, u) {
			if f.GetType() == dto.MetricType_HISTOGRAM {
				out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
				continue
			}
			out[name] = true
		}
	}
	return out
}

func scrape(t *testing.T, u string) map[string]*dto.MetricFamily {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return fams
}
