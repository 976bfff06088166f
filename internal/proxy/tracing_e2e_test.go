package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/telemetry"
)

// otlpReceiver is a real OTLP/gRPC trace service on loopback that keeps
// every span it is sent.
type otlpReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
	addr  string
}

func (r *otlpReceiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func startReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{addr: ln.Addr().String()}
	s := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(s, r)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return r
}

// TestTracesThroughOTLP exports the sidecar's and the runtime's spans,
// configured only by OTEL_* variables, to a real OTLP/gRPC receiver and
// checks the shape docs/http.md promises: a server span per request, one
// batch span linking all 16 requests that rode in it, the runtime's span a
// child of the batch span, and no batch span for a cache hit.
func TestTracesThroughOTLP(t *testing.T) {
	recv := startReceiver(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+recv.addr)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	sideTr, err := telemetry.NewTracing(context.Background(), "sidecar")
	if err != nil {
		t.Fatal(err)
	}
	rtTr, err := telemetry.NewTracing(context.Background(), "model")
	if err != nil {
		t.Fatal(err)
	}

	rt := startRuntime(t, modelrt.Config{Tracer: rtTr.Provider.Tracer("model"), Propagator: rtTr.Propagator},
		"m=sim:linear/150ms+0s", "c=sim:linear/0s+0s")
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 16, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
  - name: c
    cache: {enabled: true}
    versions: [{version: "1", endpoints: [{address: %[1]s}]}]
`, rt.addr)))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg, Tracer: sideTr.Provider.Tracer("sidecar"), Propagator: sideTr.Propagator})
	url := sc.url + "/v2/models/m/infer"
	lane := sc.p.st.Load().models["m"].versions[0].lane

	// One batch running and one in transit, then 16 requests that queue
	// behind them and leave together as one full batch.
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { _, _, _ = send(url, rowsRequest(1, 4, 1000+i, 0), false, nil) })
		waitFor(t, func() bool { eps, _ := lane.Status(); return eps[0].InFlight == i+1 })
	}
	for c := range 16 {
		wg.Go(func() {
			if r, _, err := send(url, rowsRequest(1, 4, c, 0), false, nil); err != nil || r.status != http.StatusOK {
				t.Errorf("request %d: %v %d %s", c, err, r.status, r.body)
			}
		})
	}
	waitFor(t, func() bool { _, q := lane.Status(); return q == 16 })
	wg.Wait()

	// A cached model: the second identical request is a hit.
	for range 2 {
		if r, _, err := send(sc.url+"/v2/models/c/infer", rowsRequest(1, 4, 7, 7), false, nil); err != nil || r.status != http.StatusOK {
			t.Fatalf("cached model: %v %d", err, r.status)
		}
	}
	if err := sideTr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rtTr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	servers := recv.named("infer m")
	if len(servers) != 18 {
		t.Fatalf("%d server spans for model m, want 18 (2 blockers + 16)", len(servers))
	}
	bySpan := map[string]*tracepb.Span{}
	for _, s := range servers {
		bySpan[string(s.SpanId)] = s
	}
	var big *tracepb.Span
	for _, b := range recv.named("batch m") {
		if len(b.Links) == 16 {
			big = b
		}
	}
	if big == nil {
		t.Fatalf("no batch span with 16 links among %d batch spans", len(recv.named("batch m")))
	}
	for _, l := range big.Links {
		s := bySpan[string(l.SpanId)]
		if s == nil || !bytes.Equal(s.TraceId, l.TraceId) {
			t.Errorf("batch link %x/%x is not one of the requests' server spans", l.TraceId, l.SpanId)
		}
	}
	if got := intAttr(big, "batchmesh.batch_rows"); got != 16 {
		t.Errorf("batch span batchmesh.batch_rows = %d, want 16", got)
	}
	var child *tracepb.Span
	for _, s := range recv.named("model infer m") {
		if bytes.Equal(s.ParentSpanId, big.SpanId) && bytes.Equal(s.TraceId, big.TraceId) {
			child = s
		}
	}
	if child == nil {
		t.Error("no runtime span is a child of the 16-request batch span (traceparent not carried upstream)")
	}

	cached := recv.named("infer c")
	if len(cached) != 2 {
		t.Fatalf("%d server spans for model c, want 2", len(cached))
	}
	if got := stringAttr(cached[1], "batchmesh.cache"); got != "hit" && stringAttr(cached[0], "batchmesh.cache") != "hit" {
		t.Errorf("no cached-model span says batchmesh.cache=hit")
	}
	if n := len(recv.named("batch c")); n != 1 {
		t.Errorf("%d batch spans for the cached model, want 1 (the miss; a hit has none)", n)
	}
}

func intAttr(s *tracepb.Span, key string) int64 {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetIntValue()
		}
	}
	return -1
}

func stringAttr(s *tracepb.Span, key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			return a.Value.GetStringValue()
		}
	}
	return ""
}
