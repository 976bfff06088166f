package xdsserver

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

// startFailingBackend serves the gRPC health service on loopback, failing
// every call with Internal; replies carry the header x-backend: id.
func startFailingBackend(t *testing.T, id string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", id))
		return nil, status.Error(codes.Internal, "broken runtime")
	}))
	healthpb.RegisterHealthServer(g, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// TestProxylessOutlierDetection: a grpc-go client dialing xds:///fp
// accepts the clusters' outlier_detection (no NACK) and applies its
// failure-percentage fields: of a version's two endpoints, the one that
// fails every call is ejected after an interval, and then every call
// reaches the other. (grpc-go's outlier detection runs on real time; the
// interval is 500ms and the wait is bounded.)
func TestProxylessOutlierDetection(t *testing.T) {
	good, bad := startBackend(t, "good"), startFailingBackend(t, "bad")
	s := New(Config{})
	if _, err := s.Update(context.Background(), mustParse(t, fmt.Sprintf(`
outlier_detection:
  consecutive_failures: 0
  interval: 500ms
  failure_percentage_threshold: 50
  failure_percentage_minimum_hosts: 2
  failure_percentage_request_volume: 5
  max_ejection_percent: 50
models:
  - name: fp
    versions:
      - {version: "1", endpoints: [{address: %s}, {address: %s}]}
`, good, bad))); err != nil {
		t.Fatal(err)
	}
	addr, _ := serveWatched(t, s)
	builder, err := xds.NewXDSResolverWithConfigForTesting(fmt.Appendf(nil, `{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}]}],
  "node": {"id": "grpc-app-od", "cluster": "apps"}
}`, addr))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///fp", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(builder))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)

	// Call until 200 calls in a row reach the good endpoint; the bad one
	// must have failed some calls first.
	failed, run := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for run < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the failing endpoint was not ejected within 60s (%d failed calls)", failed)
		}
		var md metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md), grpc.WaitForReady(true))
		cancel()
		backend := strings.Join(md.Get("x-backend"), ",")
		switch {
		case err == nil && backend == "good":
			run++
		case status.Code(err) == codes.Internal && backend == "bad":
			failed, run = failed+1, 0
		default:
			t.Fatalf("call: backend %q, %v", backend, err)
		}
	}
	if failed == 0 {
		t.Error("the failing endpoint got no call: ejection not shown")
	}
	t.Logf("%d failed calls before the ejection", failed)
	if nacks := s.NACKs(); len(nacks) != 0 {
		t.Errorf("NACKs = %v", nacks)
	}
}
