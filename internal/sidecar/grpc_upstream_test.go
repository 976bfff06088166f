package sidecar_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/modelrt"
	"github.com/batchmesh/batchmesh/internal/runtimetest"
	"github.com/batchmesh/batchmesh/internal/sidecar"
	"github.com/batchmesh/batchmesh/internal/sidecartest"
)

// TestGRPCUpstream sends the batches of a model whose endpoint declares
// protocol: grpc to the runtime's gRPC listener: the health probe
// (ServerReady) makes the sidecar ready, REST and gRPC callers get the
// runtime's own answers, metadata comes over gRPC, a REST pass-through
// route is refused with a clear error, and with the runtime's gRPC listener
// gone a call is Unavailable.
func TestGRPCUpstream(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/1ms+10us")})
	gaddr, stopGRPC := rt.ServeGRPC(t)
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 8, timeout: 5s}
    versions: [{version: "1", endpoints: [{address: %s, protocol: grpc}]}]
`, gaddr))})
	resp, err := http.Get(s.AdminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz with a gRPC endpoint: %d, want 200 (the ServerReady probe passes)", resp.StatusCode)
	}
	resp, err = http.Get(s.AdminURL + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	dump, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(strings.ReplaceAll(string(dump), " ", ""), `"protocol":"grpc"`) {
		t.Errorf("/config_dump does not show the endpoint's protocol: %s", dump)
	}
	c := dialGRPC(t, s.URL)
	for i := range 3 {
		want, _ := restInfer(t, rt.URL, "m", i)
		got, h := restInfer(t, s.URL, "m", i)
		if !bytes.Equal(got, want) || h.Get("X-Batchmesh-Upstream") != gaddr {
			t.Errorf("REST row %d through a gRPC endpoint: %x from %q, want %x from %s", i, got, h.Get("X-Batchmesh-Upstream"), want, gaddr)
		}
		typed, err := c.ModelInfer(t.Context(), typedInfer("m", i))
		if err != nil {
			t.Fatalf("gRPC row %d through a gRPC endpoint: %v", i, err)
		}
		if got := fp32Bytes(typed.GetOutputs()[0].GetContents().GetFp32Contents()); !bytes.Equal(got, want) {
			t.Errorf("gRPC row %d through a gRPC endpoint: %x, want %x", i, got, want)
		}
	}
	md, err := c.ModelMetadata(t.Context(), &grpcapi.ModelMetadataRequest{Name: "m"})
	if err != nil || md.GetPlatform() != "batchmesh_go" {
		t.Errorf("ModelMetadata through a gRPC endpoint: %v, %v", md, err)
	}
	resp, err = http.Get(s.URL + "/v2/models/m")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("REST metadata pass-through to a gRPC endpoint: %d, want 404 (not supported)", resp.StatusCode)
	}

	stopGRPC()
	_, err = c.ModelInfer(t.Context(), rawInfer("m", 9))
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
		t.Errorf("with the runtime's gRPC listener gone: %v, want Unavailable", err)
	}
}

// TestGRPCDrain stops the sidecar (as SIGTERM does) while a gRPC call is
// in flight: the call is answered, and the drain ends cleanly.
func TestGRPCDrain(t *testing.T) {
	rt := runtimetest.Start(t, modelrt.Config{Models: runtimetest.Models(t, "m=sim:linear/300ms+0s")})
	s := sidecartest.Start(t, sidecar.Config{Models: sidecartest.Models(t, "test.yaml", fmt.Sprintf(`models:
  - name: m
    batching: {max_batch_size: 8, timeout: 10s}
    versions: [{version: "1", endpoints: [{address: %s}]}]
`, rt.Addr))})
	c := dialGRPC(t, s.URL)
	want, _ := restInfer(t, rt.URL, "m", 5)
	answered := make(chan error, 1)
	go func() {
		resp, err := c.ModelInfer(t.Context(), rawInfer("m", 5))
		if err == nil && !bytes.Equal(resp.GetRawOutputContents()[0], want) {
			err = fmt.Errorf("answer %x, want %x", resp.GetRawOutputContents()[0], want)
		}
		answered <- err
	}()
	waitInFlight(t, s.AdminURL)
	if err := s.Stop(); err != nil {
		t.Errorf("drain with a gRPC call in flight: %v", err)
	}
	if err := <-answered; err != nil {
		t.Errorf("the gRPC call in flight during the drain: %v", err)
	}
}

// waitInFlight polls /clusters until some endpoint has a batch in flight.
func waitInFlight(t *testing.T, admin string) {
	t.Helper()
	for range 1000 {
		resp, err := http.Get(admin + "/clusters")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(strings.ReplaceAll(string(b), " ", ""), `"in_flight_batches":1`) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no batch in flight after 1000 polls of /clusters")
}
