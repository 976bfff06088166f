package proxy

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/modelrt"
)

// TestVersionFailover: the split sends (nearly) every request to version 2,
// whose only runtime then dies before the sidecar notices (probes are
// hourly). Requests that name no version fail on it — refused connections,
// then no healthy endpoint left — and are answered by version 1 instead,
// every one; a request that names version 2 gets 503.
func TestVersionFailover(t *testing.T) {
	v1 := startRuntime(t, modelrt.Config{}, "b=sim:linear/1ms+0s")
	v2 := startRuntime(t, modelrt.Config{Version: "2"}, "b=sim:linear/1ms+0s")
	cfg, err := config.Parse("t.yaml", fmt.Appendf(nil, `models:
  - name: b
    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", weight: 1, endpoints: [{address: %s}]}, {version: "2", weight: 100000, endpoints: [{address: %s}]}]
`, v1.addr, v2.addr))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg, ProbeInterval: time.Hour})
	if r, resp, err := send(sc.url+"/v2/models/b/infer", rowsRequest(1, 3, 0, 0), false, nil); err != nil || r.status != http.StatusOK || resp.ModelVersion != "2" {
		t.Fatalf("before the failure: %d %v %s (version %q), want 200 from version 2", r.status, err, r.body, resp.ModelVersion)
	}
	v2.stop()

	// Binary requests too: their tensors alias the body, which a fail-over
	// decodes again.
	for i := range 20 {
		bin := i%2 == 0 // the first, which meets the dead endpoint, is binary
		r, resp, err := send(sc.url+"/v2/models/b/infer", rowsRequest(1, 3, 0, i), bin, nil)
		if err != nil || r.status != http.StatusOK || resp.ModelVersion != "1" {
			t.Errorf("request %d (binary %v) with version 2 dead: %d %v %s (version %q), want 200 from version 1", i, bin, r.status, err, r.body, resp.ModelVersion)
		}
	}
	if r, _, _ := send(sc.url+"/v2/models/b/versions/2/infer", rowsRequest(1, 3, 0, 0), false, nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("a request naming the dead version 2: %d %s, want 503", r.status, r.body)
	}
}

// TestVersionFailoverGRPC is TestVersionFailover for gRPC ModelInfer calls.
func TestVersionFailoverGRPC(t *testing.T) {
	v1 := startRuntime(t, modelrt.Config{}, "b=sim:linear/1ms+0s")
	v2 := startRuntime(t, modelrt.Config{Version: "2"}, "b=sim:linear/1ms+0s")
	cfg, err := config.Parse("t.yaml", fmt.Appendf(nil, `models:
  - name: b
    batching: {max_batch_size: 8, max_queue_delay: 1ms, timeout: 5s}
    versions: [{version: "1", weight: 1, endpoints: [{address: %s}]}, {version: "2", weight: 100000, endpoints: [{address: %s}]}]
`, v1.addr, v2.addr))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecarConfig(t, Config{Models: cfg, ProbeInterval: time.Hour})
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
	call := func(i int, version string) (*grpcapi.ModelInferResponse, error) {
		req := rowsRequest(1, 3, 0, i)
		in := codecToGRPC(&req)
		in.ModelName, in.ModelVersion = "b", version
		return client.ModelInfer(t.Context(), in)
	}
	if out, err := call(0, ""); err != nil || out.GetModelVersion() != "2" {
		t.Fatalf("before the failure: %v (version %q), want an answer from version 2", err, out.GetModelVersion())
	}
	v2.stop()
	for i := range 10 {
		if out, err := call(i, ""); err != nil || out.GetModelVersion() != "1" {
			t.Errorf("call %d with version 2 dead: %v (version %q), want an answer from version 1", i, err, out.GetModelVersion())
		}
	}
	if _, err := call(0, "2"); status.Code(err) != codes.Unavailable {
		t.Errorf("a call naming the dead version 2: %v, want Unavailable", err)
	}
}
