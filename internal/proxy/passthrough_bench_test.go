package proxy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// BenchmarkPassThroughHandler is the sidecar's cost per pass-through
// request (batching off): the inference handler, with the real metrics
// SDK, forwarding to a real zero-cost runtime on a loopback port. Its
// allocs/op are the handler's own plus the upstream client's; the
// application side of the socket is left out (the handler is called on a
// reused RequestCtx, as fasthttp's server does).
//
//	go test -run '^$' -bench PassThroughHandler -benchmem ./internal/proxy/
func BenchmarkPassThroughHandler(b *testing.B) {
	rt := runtimetest.Start(b, modelrt.Config{Models: runtimetest.Models(b, "m=sim:linear/0s+0s")})
	cfg, err := config.Parse("bench.yaml", fmt.Appendf(nil, `models:
  - name: m
    batching: {max_batch_size: 0, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %q}]}]
`, rt.Addr))
	if err != nil {
		b.Fatal(err)
	}
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(Config{Models: cfg, Meter: metrics.Meter("sidecar"), Metrics: metrics.Handler()})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	p.Probe(context.Background())
	body := []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI("/v2/models/m/infer")
	req.Header.SetHost("sidecar")
	req.Header.SetContentType("application/json")
	var rc fasthttp.RequestCtx
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	b.ReportAllocs()
	for b.Loop() {
		rc.Init(&req, remote, nil)
		rc.Request.SetBody(body)
		p.Handler(&rc)
		if code := rc.Response.StatusCode(); code != fasthttp.StatusOK {
			b.Fatalf("status %d: %s", code, rc.Response.Body())
		}
	}
}

// TestMetricsAllocateNothing guards the pass-through path's metrics: once
// a series exists, counting a request and an upstream call with the real
// metrics SDK allocates nothing (each attribute set is built once and
// passed as a stored option slice).
func TestMetricsAllocateNothing(t *testing.T) {
	metrics, err := telemetry.NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := newMetrics(metrics.Meter("sidecar"), func() []endpointWeight { return nil }, func() []versionAvailable { return nil })
	if err != nil {
		t.Fatal(err)
	}
	record := func() {
		pm.request("m", 200, cacheBypass, time.Millisecond)
		pm.upstream("m", "127.0.0.1:1", 200, time.Millisecond)
	}
	record() // builds the series
	if n := testing.AllocsPerRun(1000, record); n != 0 {
		t.Errorf("%v allocations per request's metrics, want 0", n)
	}
}
