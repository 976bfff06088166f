package xdsserver

import (
	"context"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/genproto/googleapis/rpc/status"
)

// byType collects a counter's sums, or a histogram's counts, by {type}.
func byType(t *testing.T, r *sdkmetric.ManualReader, name string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value("type")
					out[v.AsString()] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					v, _ := p.Attributes.Value("type")
					out[v.AsString()] += int64(p.Count)
				}
			default:
				t.Fatalf("%s: unexpected data %T", name, m.Data)
			}
		}
	}
	return out
}

func equalCounts(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestMetrics: responses, ACKs and NACKs of a real ADS exchange are counted
// by type.
func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	s := New(Config{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")})
	if _, err := s.Update(context.Background(), mustParse(t, splitYAML)); err != nil {
		t.Fatal(err)
	}
	c := dialADS(t, startServer(t, s), sidecarNode)
	rs := subscribe(c)
	ack(c, rs)
	all := func(n int64) map[string]int64 {
		return map[string]int64{"listeners": n, "routes": n, "clusters": n, "endpoints": n}
	}
	waitFor(t, func() bool { return equalCounts(byType(t, reader, "batchmesh_xds_push_ack_seconds"), all(1)) })
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, all(1)) {
		t.Errorf("updates = %v, want one per type", got)
	}
	if got := byType(t, reader, "batchmesh_xds_nacks"); len(got) != 0 {
		t.Errorf("nacks = %v, want none", got)
	}

	// An update of a version weight and an endpoint weight: only routes
	// and endpoints are sent; the endpoints are ACKed, the routes NACKed.
	cfg := mustParse(t, splitYAML)
	cfg.Models[0].Versions[0].Weight = 50
	cfg.Models[0].Versions[1].Endpoints[0].Weight = 4
	v2, err := s.Update(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs = c.nextN(2)
	c.send(resource.EndpointType, []string{"batchmesh|bert|1", "batchmesh|bert|2"}, v2, rs[resource.EndpointType].GetNonce(), nil)
	c.send(resource.RouteType, []string{RouteName}, "", rs[resource.RouteType].GetNonce(), &status.Status{Code: 3, Message: "no"})
	want := all(1)
	want["endpoints"] = 2
	waitFor(t, func() bool { return equalCounts(byType(t, reader, "batchmesh_xds_push_ack_seconds"), want) })
	waitFor(t, func() bool {
		return equalCounts(byType(t, reader, "batchmesh_xds_nacks"), map[string]int64{"routes": 1})
	})
	want["routes"] = 2
	if got := byType(t, reader, "batchmesh_xds_updates"); !equalCounts(got, want) {
		t.Errorf("updates = %v, want %v", got, want)
	}
}
