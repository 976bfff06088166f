package xdsserver

import (
	"context"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
)

// startBackend serves the gRPC health service on a loopback port; every
// reply carries the header x-backend: id.
func startBackend(t *testing.T, id string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", id))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(g, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

// acks records, per type URL, the versions ACKed by gRPC nodes.
type acks struct {
	mu sync.Mutex
	by map[string]map[string]bool
}

func (a *acks) has(typ, version string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.by[typ][version]
}

// split makes n calls and returns the share of each backend.
func split(t *testing.T, hc healthpb.HealthClient, n int) map[string]float64 {
	t.Helper()
	counts := map[string]int{}
	for range n {
		var md metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		counts[strings.Join(md.Get("x-backend"), ",")]++
	}
	out := map[string]float64{}
	for k, c := range counts {
		out[k] = float64(c) / float64(n)
	}
	return out
}

// TestProxylessGRPC is the proof that the resources are real xDS: a
// grpc-go client dials xds:///bert through its own xDS resolver, bootstrapped
// at the control plane on loopback, ACKs every resource type, splits its
// calls over two gRPC health servers by the pushed version weights (90/10,
// within ±3% over 2,000 calls) and follows a change to 10/90.
func TestProxylessGRPC(t *testing.T) {
	v1, v2 := startBackend(t, "v1"), startBackend(t, "v2")
	yaml := func(w1, w2 int) string {
		return fmt.Sprintf(`
models:
  - name: bert
    versions:
      - {version: "1", weight: %d, endpoints: [{address: %s, zone: a}]}
      - {version: "2", weight: %d, endpoints: [{address: %s}]}
  - name: other
    versions:
      - {version: "1", endpoints: [{address: 127.0.0.1:1}]}
`, w1, v1, w2, v2)
	}
	s := New(Config{})
	if _, err := s.Update(context.Background(), mustParse(t, yaml(90, 10))); err != nil {
		t.Fatal(err)
	}

	// Wrap the server's callbacks to see the client's ACKs.
	got := &acks{by: map[string]map[string]bool{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &ackWatcher{ServerStream: ss, acks: got})
	}))
	s.Register(ctx, g)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		cancel()
		g.Stop()
		<-done
	})

	// grpc-go reads GRPC_XDS_BOOTSTRAP_CONFIG once per process, at init; a
	// resolver of its own takes the bootstrap per test.
	xdsResolver, err := xds.NewXDSResolverWithConfigForTesting(fmt.Appendf(nil, `{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
  "node": {"id": "grpc-proxyless-1", "cluster": "apps", "locality": {"zone": "a"},
           "metadata": {%q: "bert"}}
}`, lis.Addr().String(), ModelMetadataKey))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///bert", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(xdsResolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)

	const n = 2000
	first := split(t, hc, n)
	t.Logf("90/10: v1 %.1f%%, v2 %.1f%% of %d calls", 100*first["v1"], 100*first["v2"], n)
	if math.Abs(first["v1"]-0.9) > 0.03 || math.Abs(first["v2"]-0.1) > 0.03 {
		t.Errorf("90/10 split = %v", first)
	}
	ver := s.Version()
	for _, typ := range allTypes {
		waitFor(t, func() bool { return got.has(typ, ver) })
	}
	if gs := s.Groups(); !hasGroup(gs, ProxylessGroupPrefix+"bert") {
		t.Errorf("groups = %+v, want %sbert", gs, ProxylessGroupPrefix)
	}

	// A weight change is followed.
	start := time.Now()
	if _, err := s.Update(context.Background(), mustParse(t, yaml(10, 90))); err != nil {
		t.Fatal(err)
	}
	ver = s.Version()
	for _, typ := range allTypes {
		waitFor(t, func() bool { return got.has(typ, ver) })
	}
	t.Logf("all four types at %s ACKed %v after Update", ver, time.Since(start))
	second := split(t, hc, n)
	t.Logf("10/90: v1 %.1f%%, v2 %.1f%% of %d calls", 100*second["v1"], 100*second["v2"], n)
	if math.Abs(second["v1"]-0.1) > 0.03 || math.Abs(second["v2"]-0.9) > 0.03 {
		t.Errorf("10/90 split = %v", second)
	}
	if nacks := s.NACKs(); len(nacks) != 0 {
		t.Errorf("NACKs = %v", nacks)
	}
}

func hasGroup(gs []GroupState, name string) bool {
	for _, g := range gs {
		if g.Group == name {
			return len(g.Resources["listeners"]) == 1 && len(g.Resources["routes"]) == 1 &&
				len(g.Resources["clusters"]) == 2 && len(g.Resources["endpoints"]) == 2
		}
	}
	return false
}

// ackWatcher records the ACKs that pass through an ADS stream. (The node
// is in a stream's first request only.)
type ackWatcher struct {
	grpc.ServerStream
	acks *acks
}

func (w *ackWatcher) RecvMsg(m any) error {
	err := w.ServerStream.RecvMsg(m)
	if req, ok := m.(*discovery.DiscoveryRequest); ok && err == nil && req.GetErrorDetail() == nil &&
		req.GetResponseNonce() != "" {
		w.acks.mu.Lock()
		if w.acks.by[req.GetTypeUrl()] == nil {
			w.acks.by[req.GetTypeUrl()] = map[string]bool{}
		}
		w.acks.by[req.GetTypeUrl()][req.GetVersionInfo()] = true
		w.acks.mu.Unlock()
	}
	return err
}
