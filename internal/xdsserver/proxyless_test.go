package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
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

// acks counts, per type URL and version, the ACKs of gRPC clients.
type acks struct {
	mu sync.Mutex
	by map[string]map[string]int
}

func (a *acks) count(typ, version string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.by[typ][version]
}

// split makes n calls and returns the share of each backend.
func split(hc healthpb.HealthClient, n int) (map[string]float64, error) {
	counts := map[string]int{}
	for range n {
		var md metadata.MD
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("call: %w", err)
		}
		counts[strings.Join(md.Get("x-backend"), ",")]++
	}
	out := map[string]float64{}
	for k, c := range counts {
		out[k] = float64(c) / float64(n)
	}
	return out, nil
}

// proxylessYAML serves two models of two versions each: bert on backends
// b1 and b2 with weights bw, mlp on m1 and m2 with weights mw.
func proxylessYAML(b1, b2, m1, m2 string, bw, mw [2]int) string {
	return fmt.Sprintf(`
models:
  - name: bert
    versions:
      - {version: "1", weight: %d, endpoints: [{address: %s, zone: a}]}
      - {version: "2", weight: %d, endpoints: [{address: %s}]}
  - name: mlp
    versions:
      - {version: "1", weight: %d, endpoints: [{address: %s}]}
      - {version: "2", weight: %d, endpoints: [{address: %s, zone: b}]}
`, bw[0], b1, bw[1], b2, mw[0], m1, mw[1], m2)
}

// serveWatched serves s on loopback with every ADS request passed through
// an ackWatcher, and returns the address and the ACKs seen.
func serveWatched(t *testing.T, s *Server) (string, *acks) {
	t.Helper()
	got := &acks{by: map[string]map[string]int{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
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
	return lis.Addr().String(), got
}

// splitBoth makes n calls on each of two channels at once and returns the
// shares of each.
func splitBoth(t *testing.T, a, b healthpb.HealthClient, n int) (sa, sb map[string]float64) {
	t.Helper()
	var wg sync.WaitGroup
	var ea, eb error
	wg.Go(func() { sa, ea = split(a, n) })
	wg.Go(func() { sb, eb = split(b, n) })
	wg.Wait()
	if err := errors.Join(ea, eb); err != nil {
		t.Fatal(err)
	}
	return sa, sb
}

// checkShare fails the test unless share[k] is within ±3% of want[k] for
// every key of want.
func checkShare(t *testing.T, what string, share, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		if math.Abs(share[k]-w) > 0.03 {
			t.Errorf("%s: %s got %.1f%%, want %.0f%% ± 3 (%v)", what, k, 100*share[k], 100*w, share)
		}
	}
}

// TestProxylessGRPC is the proof that the resources are real xDS for a
// plain gRPC application: one bootstrap with only xds_servers and a node
// of id and cluster (no batchmesh metadata), one resolver builder, and two
// channels on it dialing xds:///bert and xds:///mlp at once. (grpc-go
// reads GRPC_XDS_BOOTSTRAP once per process, at init, so a test takes its
// bootstrap through xds.NewXDSResolverWithConfigForTesting; grpc-go keeps
// one xDS client per target, each an ADS stream of the same node.) Each
// channel splits its calls over its model's two gRPC health servers by the
// pushed version weights, within ±3% over 2,000 calls, and both follow a
// weight change. A third channel, for a model that does not exist, fails
// with the listener reported missing. No NACK is sent.
func TestProxylessGRPC(t *testing.T) {
	b1, b2, m1, m2 := startBackend(t, "bert-1"), startBackend(t, "bert-2"), startBackend(t, "mlp-1"), startBackend(t, "mlp-2")
	s := New(Config{})
	if _, err := s.Update(context.Background(), mustParse(t, proxylessYAML(b1, b2, m1, m2, [2]int{90, 10}, [2]int{30, 70}))); err != nil {
		t.Fatal(err)
	}
	addr, got := serveWatched(t, s)

	builder, err := xds.NewXDSResolverWithConfigForTesting(fmt.Appendf(nil, `{
  "xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}]}],
  "node": {"id": "grpc-app-1", "cluster": "apps"}
}`, addr))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(target string) healthpb.HealthClient {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(builder))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	bert, mlp := dial("xds:///bert"), dial("xds:///mlp")
	// The control plane answers a listener it does not have at once,
	// without it; grpc-go 1.85 reports a listener it never received as
	// missing only when its resource timer (15 s) fires, so this call runs
	// alongside the rest of the test.
	nope := dial("xds:///nope")
	nopeErr := make(chan error, 1)
	go func() {
		// Until then calls fail fast with "produced zero addresses".
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := nope.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err == nil || strings.Contains(err.Error(), `"nope"`) || time.Now().After(deadline) {
				nopeErr <- err
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	const n = 2000
	sb, sm := splitBoth(t, bert, mlp, n)
	t.Logf("bert 90/10: %v; mlp 30/70: %v (%d calls each)", sb, sm, n)
	checkShare(t, "bert 90/10", sb, map[string]float64{"bert-1": .9, "bert-2": .1})
	checkShare(t, "mlp 30/70", sm, map[string]float64{"mlp-1": .3, "mlp-2": .7})
	ver := s.Version()
	for _, typ := range allTypes {
		waitFor(t, func() bool { return got.count(typ, ver) >= 2 })
	}

	// A weight change of both models is followed by both channels. Only
	// the route configs change.
	start := time.Now()
	if _, err := s.Update(context.Background(), mustParse(t, proxylessYAML(b1, b2, m1, m2, [2]int{10, 90}, [2]int{70, 30}))); err != nil {
		t.Fatal(err)
	}
	ver = s.Version()
	waitFor(t, func() bool { return got.count(resource.RouteType, ver) >= 2 })
	t.Logf("both route configs at %s ACKed %v after Update", ver, time.Since(start))
	sb, sm = splitBoth(t, bert, mlp, n)
	t.Logf("bert 10/90: %v; mlp 70/30: %v (%d calls each)", sb, sm, n)
	checkShare(t, "bert 10/90", sb, map[string]float64{"bert-1": .1, "bert-2": .9})
	checkShare(t, "mlp 70/30", sm, map[string]float64{"mlp-1": .7, "mlp-2": .3})

	// The model that does not exist.
	if err := <-nopeErr; err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("call to xds:///nope: %v; want the listener reported missing", err)
	} else {
		t.Logf("xds:///nope: %v", err)
	}
	if nacks := s.NACKs(); len(nacks) != 0 {
		t.Errorf("NACKs = %v", nacks)
	}
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
			w.acks.by[req.GetTypeUrl()] = map[string]int{}
		}
		w.acks.by[req.GetTypeUrl()][req.GetVersionInfo()]++
		w.acks.mu.Unlock()
	}
	return err
}
