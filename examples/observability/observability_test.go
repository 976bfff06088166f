// Package observability_test checks the examples in this directory against a
// live runtime, sidecar and control plane on loopback: every metric of
// docs/http.md is exported, by the component that should, with its labels
// (TestMetricNames), the Grafana dashboard queries only metrics that exist
// (TestDashboardReferencesExistingMetrics), and a real Prometheus server
// scrapes all three (TestPrometheusScrapes).
package observability_test

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadgen"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	sidecarpkg "github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// Where a metric is exported: the sidecar's admin /metrics, the runtime's
// /metrics, the control plane's admin /metrics.
const (
	sidecar      = "sidecar"
	runtime      = "runtime"
	controlPlane = "control plane"
)

// metricSpec is one metric of docs/http.md as it is scraped: counters with
// their _total suffix, histograms by their base name.
type metricSpec struct {
	name   string
	typ    dto.MetricType
	labels []string // every series has exactly these (histograms: besides le)
	from   string   // sidecar, runtime or controlPlane
}

var (
	counter   = dto.MetricType_COUNTER
	gauge     = dto.MetricType_GAUGE
	histogram = dto.MetricType_HISTOGRAM
)

// designMetrics is the metrics table of docs/http.md. Keep them in step.
var designMetrics = []metricSpec{
	{name: "batchmesh_requests_total", typ: counter, labels: []string{"model", "code", "cache"}, from: sidecar},
	{name: "batchmesh_request_duration_seconds", typ: histogram, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_queue_depth", typ: gauge, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_queue_wait_seconds", typ: histogram, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_batch_rows", typ: histogram, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_cache_hits_total", typ: counter, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_cache_misses_total", typ: counter, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_cache_evictions_total", typ: counter, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_cache_bytes", typ: gauge, from: sidecar},
	{name: "batchmesh_cache_entries", typ: gauge, from: sidecar},
	{name: "batchmesh_coalesced_total", typ: counter, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_shed_total", typ: counter, labels: []string{"model", "reason"}, from: sidecar},
	{name: "batchmesh_upstream_requests_total", typ: counter, labels: []string{"model", "endpoint", "code"}, from: sidecar},
	{name: "batchmesh_upstream_duration_seconds", typ: histogram, labels: []string{"model", "endpoint"}, from: sidecar},
	{name: "batchmesh_hedges_total", typ: counter, labels: []string{"model", "outcome"}, from: sidecar},
	{name: "batchmesh_retry_overflow_total", typ: counter, labels: []string{"model"}, from: sidecar},
	{name: "batchmesh_circuit_open", typ: gauge, labels: []string{"model", "breaker"}, from: sidecar},
	{name: "batchmesh_endpoint_weight", typ: gauge, labels: []string{"model", "version", "endpoint"}, from: sidecar},
	{name: "batchmesh_version_available", typ: gauge, labels: []string{"model", "version"}, from: sidecar},
	{name: "batchmesh_fast_path_requests_total", typ: counter, from: sidecar},
	{name: "batchmesh_xds_updates_total", typ: counter, labels: []string{"type"}, from: controlPlane},
	{name: "batchmesh_xds_nacks_total", typ: counter, labels: []string{"type"}, from: controlPlane},
	{name: "batchmesh_xds_push_ack_seconds", typ: histogram, labels: []string{"type"}, from: controlPlane},
	{name: "batchmesh_xds_config_refused_total", typ: counter, from: controlPlane},
	{name: "model_queue_depth", typ: gauge, labels: []string{"model"}, from: runtime},
	{name: "model_batch_rows", typ: histogram, labels: []string{"model"}, from: runtime},
	{name: "model_inference_duration_seconds", typ: histogram, labels: []string{"model"}, from: runtime},
	{name: "model_rows_total", typ: counter, labels: []string{"model"}, from: runtime},
}

func TestMetricNames(t *testing.T) {
	st := startStack(t)
	st.exercise(t)
	scraped := st.scrapeAll(t)

	listed := map[string]string{} // name → where designMetrics says it is exported
	for _, m := range designMetrics {
		if prev, dup := listed[m.name]; dup {
			t.Errorf("designMetrics lists %s twice (from the %s and the %s)", m.name, prev, m.from)
		}
		listed[m.name] = m.from
		fams, ok := scraped[m.from]
		if !ok {
			t.Errorf("%s: from %q, which is not one of the components scraped", m.name, m.from)
			continue
		}
		fam, ok := fams[m.name]
		if !ok {
			t.Errorf("%s: not exported by the %s", m.name, m.from)
			continue
		}
		if fam.GetType() != m.typ {
			t.Errorf("%s: type %v, want %v", m.name, fam.GetType(), m.typ)
		}
		want := slices.Sorted(slices.Values(m.labels))
		for _, s := range fam.GetMetric() {
			if got := labelNames(s); !slices.Equal(got, want) {
				t.Errorf("%s: a series has labels %q, want %q", m.name, got, want)
				break
			}
		}
	}
	for from, fams := range scraped {
		for name := range fams {
			if !strings.HasPrefix(name, "batchmesh_") && !strings.HasPrefix(name, "model_") {
				continue
			}
			switch where, ok := listed[name]; {
			case !ok:
				t.Errorf("the %s exports %s, which docs/http.md (and designMetrics) does not list", from, name)
			case where != from:
				t.Errorf("the %s exports %s, which designMetrics lists as the %s's", from, name, where)
			}
		}
	}
}

// families is a scrape: metric families by name.
type families map[string]*dto.MetricFamily

// seriesNames returns the names a PromQL query can select in fams:
// histograms as _bucket, _sum and _count.
func (fams families) seriesNames() map[string]bool {
	out := map[string]bool{}
	for name, f := range fams {
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				out[name+suffix] = true
			}
			continue
		}
		out[name] = true
	}
	return out
}

// sum adds the values of every series of the family name (histograms:
// their counts); ok is false when the family is absent.
func (fams families) sum(name string) (v float64, ok bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v, true
}

func labelNames(m *dto.Metric) []string {
	var out []string
	for _, l := range m.GetLabel() {
		out = append(out, l.GetName())
	}
	sort.Strings(out)
	return out
}

var client = &http.Client{Timeout: 10 * time.Second}

func scrape(t *testing.T, url string) families {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return fams
}

// stack is a reference runtime and a sidecar in front of it, and a control
// plane, on loopback.
//
// The sidecar serves two models: cached (row cache on, in a cache of 4 KiB
// so that rows are evicted) and tiny (a queue of 4 rows in front of a slow
// model, so that requests are shed). The control plane serves a config of
// the cached model; the sidecar reads its own file, and the test's ADS
// client is the control plane's only one.
type stack struct {
	runtimeURL, sidecarURL, adminURL string
	cp                               *cpProcess
}

// scrapeAll scrapes the /metrics of each component, by where (sidecar,
// runtime, controlPlane).
func (st *stack) scrapeAll(t *testing.T) map[string]families {
	t.Helper()
	return map[string]families{
		sidecar:      scrape(t, st.adminURL+"/metrics"),
		runtime:      scrape(t, st.runtimeURL+"/metrics"),
		controlPlane: scrape(t, st.cp.adminURL+"/metrics"),
	}
}

const (
	cachedModel = "bert-base"
	tinyModel   = "tiny-queue"
)

func startStack(t *testing.T) *stack {
	t.Helper()
	st := &stack{}
	models := runtimetest.Models(t, cachedModel+"=sim:linear/1ms+0s", tinyModel+"=sim:linear/20ms+0s")
	st.runtimeURL = runtimetest.Start(t, modelrt.Config{Models: models, Slots: 4}, runtimetest.WithMetrics()).URL
	rt := strings.TrimPrefix(st.runtimeURL, "http://")
	st.cp = startControlPlane(t, rt)
	cfg, err := config.Parse("observability.yaml", fmt.Appendf(nil, `cache_bytes: 4KiB
models:
  - name: %[2]s
    batching: {max_batch_size: 64, max_queue_delay: 1ms, timeout: 5s}
    cache: {enabled: true}
    versions: [{version: "1", endpoints: [{address: %[1]s, slots: 2}]}]
  - name: %[3]s
    batching: {max_batch_size: 4, max_queue_delay: 1ms, max_queue_size: 4, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %[1]s, slots: 1}]}]
`, rt, cachedModel, tinyModel))
	if err != nil {
		t.Fatal(err)
	}
	sc := sidecartest.Start(t, sidecarpkg.Config{Models: cfg, Source: "observability.yaml"})
	st.sidecarURL, st.adminURL = sc.URL, sc.AdminURL
	return st
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// load runs cfg against model through the sidecar; every run is bounded by
// its Requests.
func (st *stack) load(t *testing.T, model string, cfg loadgen.Config) loadgen.Result {
	t.Helper()
	cfg.URL = st.sidecarURL + "/v2/models/" + model + "/infer"
	res, err := loadgen.Run(t.Context(), cfg)
	if err != nil {
		t.Fatalf("load on %s: %v", model, err)
	}
	return res
}

// exercise drives the load that makes every sidecar metric appear: cache
// hits, misses and evictions, coalesced rows and a shed request. The last
// two depend on timing, so each is retried a bounded number of times. Then
// the control plane's: see cpProcess.exercise.
func (st *stack) exercise(t *testing.T) {
	t.Helper()
	// Half the requests repeat one of 8 hot bodies: hits; the other half
	// are distinct rows overflowing the 4 KiB cache: misses and evictions.
	res := st.load(t, cachedModel, loadgen.Config{Clients: 16, Requests: 1000, Repeat: 0.5})
	if res.ByStatus[http.StatusOK] == 0 {
		t.Fatalf("no request succeeded: %v (first error %q)", res.ByStatus, res.FirstError)
	}
	const attempts = 5
	// Coalescing: 32 clients sending only the 8 hot bodies of a fresh seed,
	// so identical rows are in flight together.
	for i := range attempts {
		if v, _ := scrape(t, st.adminURL+"/metrics").sum("batchmesh_coalesced_total"); v > 0 {
			break
		}
		if i == attempts-1 {
			t.Fatalf("no row was coalesced after %d runs", attempts)
		}
		st.load(t, cachedModel, loadgen.Config{Clients: 32, Requests: 64, Repeat: 1, Seed: uint64(100 + i)})
	}
	// Shedding: 16 clients of 2-row requests against a queue of 4 rows in
	// front of a model that takes 20 ms per batch.
	for i := range attempts {
		if v, _ := scrape(t, st.adminURL+"/metrics").sum("batchmesh_shed_total"); v > 0 {
			break
		}
		if i == attempts-1 {
			t.Fatalf("no request was shed after %d runs", attempts)
		}
		st.load(t, tinyModel, loadgen.Config{Clients: 16, Requests: 64, Rows: 2})
	}
	st.cp.exercise(t)
}
