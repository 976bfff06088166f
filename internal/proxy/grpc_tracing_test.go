package proxy

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// TestGRPCSpanLinkedByBatch sends a gRPC call (with a caller's
// traceparent) and a REST request that ride in one batch: the gRPC call
// has its own server span in the caller's trace, with the rpc attributes,
// and the batch span links both requests' spans.
func TestGRPCSpanLinkedByBatch(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	rt := startRuntime(t, modelrt.Config{}, "m=sim:linear/150ms+0s")
	cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 16, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, rt.addr)))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg, Tracer: tp.Tracer("sidecar"), Propagator: propagation.TraceContext{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := sc.p.NewGRPCServer()
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client := grpcapi.NewGRPCInferenceServiceClient(cc)
	url := sc.url + "/v2/models/m/infer"
	lane := sc.p.st.Load().models["m"].versions[0].lane

	// One batch running and one in transit; then a REST and a gRPC
	// request queue behind them and leave together.
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() { _, _, _ = send(url, rowsRequest(1, 4, 1000+i, 0), false, nil) })
		waitFor(t, func() bool { eps, _ := lane.Status(); return eps[0].InFlight == i+1 })
	}
	wg.Go(func() {
		if r, _, err := send(url, rowsRequest(1, 4, 1, 0), false, nil); err != nil || r.status != http.StatusOK {
			t.Errorf("REST request: %v %d %s", err, r.status, r.body)
		}
	})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := rowsRequest(1, 4, 2, 0)
	wg.Go(func() {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		if _, err := client.ModelInfer(ctx, codecToGRPC(&req)); err != nil {
			t.Errorf("gRPC request: %v", err)
		}
	})
	waitFor(t, func() bool { _, q := lane.Status(); return q == 2 })
	wg.Wait()
	_ = tp.ForceFlush(t.Context())

	var grpcSpan sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "infer m" && s.SpanContext().TraceID().String() == traceID {
			grpcSpan = s
		}
	}
	if grpcSpan == nil {
		t.Fatalf("no server span of the gRPC call in the caller's trace %s", traceID)
	}
	attrs := map[string]string{}
	for _, a := range grpcSpan.Attributes() {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["rpc.system"] != "grpc" || attrs["rpc.method"] != "ModelInfer" || attrs["batchmesh.batch_rows"] != "2" {
		t.Errorf("gRPC span attributes %v, want rpc.system grpc, rpc.method ModelInfer, batch_rows 2", attrs)
	}
	for _, s := range rec.Ended() {
		if s.Name() != "batch m" || len(s.Links()) != 2 {
			continue
		}
		for _, l := range s.Links() {
			if l.SpanContext.SpanID() == grpcSpan.SpanContext().SpanID() {
				return
			}
		}
	}
	t.Error("no batch span of 2 requests links the gRPC call's span")
}

// codecToGRPC is req as a raw ModelInferRequest of model m.
func codecToGRPC(req *inference.Request) *grpcapi.ModelInferRequest {
	r := *req
	r.Model = "m"
	return codec.EncodeGRPCRequest(&r)
}
