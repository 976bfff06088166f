package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func TestNewNeedsAConfiguration(t *testing.T) {
	_, err := sidecar.New(sidecar.Config{})
	if err == nil || !strings.Contains(err.Error(), "-config") || !strings.Contains(err.Error(), "-xds") {
		t.Errorf("New without models or control plane: %v, want an error naming -config and -xds", err)
	}
}

func TestListenerInUse(t *testing.T) {
	taken := listen(t)
	defer taken.Close()
	cfg, err := config.Parse("t.yaml", []byte("models:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: 127.0.0.1:1}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sidecar.New(sidecar.Config{Listen: "127.0.0.1:0", Admin: taken.Addr().String(), Models: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = s.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "admin listener") || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Run with the admin address taken: %v, want an error naming the admin listener and its address", err)
	}
}

// TestMetricsFromStartup scrapes a sidecar that has served nothing yet:
// every counter and gauge of the metrics table is there, at zero, for each
// configured model, so that dashboards and alerts see 0 rather than no
// data. Histograms are the exception: they appear with their first
// observation (the OpenTelemetry API cannot create an empty one).
func TestMetricsFromStartup(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "plain=sim:linear/2ms+10us", "cached=sim:linear/2ms+10us")})
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: plain
    batching: {max_batch_size: 8}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
  - name: cached
    batching: {max_batch_size: 8}
    cache: {enabled: true, ttl: 1m}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
`, rt.Addr))})
	fams := scrape(t, s.AdminURL+"/metrics")
	type series struct {
		name   string
		labels map[string]string
	}
	var want []series
	for _, m := range []string{"plain", "cached"} {
		want = append(want,
			series{"batchmesh_requests_total", map[string]string{"model": m, "code": "200", "cache": "bypass"}},
			series{"batchmesh_queue_depth", map[string]string{"model": m}},
			series{"batchmesh_cache_hits_total", map[string]string{"model": m}},
			series{"batchmesh_cache_misses_total", map[string]string{"model": m}},
			series{"batchmesh_cache_evictions_total", map[string]string{"model": m}},
			series{"batchmesh_coalesced_total", map[string]string{"model": m}},
			series{"batchmesh_upstream_requests_total", map[string]string{"model": m, "endpoint": rt.Addr, "code": "200"}},
		)
		for _, reason := range []string{"queue_full", "deadline", "priority"} {
			want = append(want, series{"batchmesh_shed_total", map[string]string{"model": m, "reason": reason}})
		}
	}
	for _, c := range []string{"hit", "miss", "partial", "coalesced"} {
		want = append(want, series{"batchmesh_requests_total", map[string]string{"model": "cached", "code": "200", "cache": c}})
	}
	want = append(want, series{"batchmesh_cache_bytes", nil}, series{"batchmesh_cache_entries", nil})
	for _, w := range want {
		v, ok := find(fams[w.name], w.labels)
		switch {
		case !ok:
			t.Errorf("%s%v: not on /metrics of a fresh sidecar", w.name, w.labels)
		case v != 0:
			t.Errorf("%s%v = %v on a fresh sidecar, want 0", w.name, w.labels, v)
		}
	}
	if v, ok := find(fams["batchmesh_endpoint_weight"], map[string]string{"model": "cached", "version": "1", "endpoint": rt.Addr}); !ok || v != 1 {
		t.Errorf("batchmesh_endpoint_weight of cached's endpoint: %v (present %v), want 1", v, ok)
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// find returns the value of fam's series with exactly labels.
func find(fam *dto.MetricFamily, labels map[string]string) (float64, bool) {
	for _, m := range fam.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}
