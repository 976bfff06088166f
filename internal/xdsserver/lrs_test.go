package xdsserver

import (
	"context"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/batchmesh/batchmesh/internal/config"
)

func adaptiveConfig(t *testing.T, mode string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("lrs.yaml", []byte(`weights: `+mode+`
models:
  - name: m
    batching: {max_batch_size: 8}
    versions:
      - version: "1"
        endpoints: [{address: "10.0.0.1:80", slots: 3}, {address: "10.0.0.2:80"}, {address: "10.0.0.3:80", weight: 0}]
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// report is one endpoint's stats as a sidecar encodes them.
func report(addr string, port uint32, rows, util float64, samples uint64) *endpoint.UpstreamEndpointStats {
	return &endpoint.UpstreamEndpointStats{
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: addr, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}},
		TotalSuccessfulRequests: samples,
		LoadMetricStats: []*endpoint.EndpointLoadMetricStats{
			{MetricName: MetricRows, NumRequestsFinishedWithMetric: samples, TotalMetricValue: rows},
			{MetricName: MetricUtilization, NumRequestsFinishedWithMetric: samples, TotalMetricValue: util * float64(samples)},
		},
	}
}

func loadRequest(eps ...*endpoint.UpstreamEndpointStats) *lrsv3.LoadStatsRequest {
	return &lrsv3.LoadStatsRequest{ClusterStats: []*endpoint.ClusterStats{{
		ClusterName:           ClusterName("m", "1"),
		UpstreamLocalityStats: []*endpoint.UpstreamLocalityStats{{UpstreamEndpointStats: eps}},
	}}}
}

func weightsOf(t *testing.T, s *Server) map[string]uint32 {
	t.Helper()
	out := map[string]uint32{}
	for _, r := range s.resourcesOf(resource.EndpointType) {
		for _, loc := range r.(*endpoint.ClusterLoadAssignment).GetEndpoints() {
			for _, e := range loc.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				out[sa.GetAddress()] = e.GetLoadBalancingWeight().GetValue()
			}
		}
	}
	return out
}

// TestLRSStream: a client on a real gRPC stream gets every cluster and the
// interval, and its reports reach the capacity estimates and the weights.
func TestLRSStream(t *testing.T) {
	srv := New(Config{Epoch: 1})
	l := NewLRS(srv, LRSConfig{ReportInterval: 500 * time.Millisecond})
	cfg := adaptiveConfig(t, config.WeightsAdaptive)
	if _, err := l.Update(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	l.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: &core.Node{Id: "n1"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetSendAllClusters() || resp.GetLoadReportingInterval().AsDuration() != 500*time.Millisecond ||
		len(resp.GetClusters()) != 1 || resp.GetClusters()[0] != ClusterName("m", "1") {
		t.Fatalf("response %v", resp)
	}
	// Two sidecars' worth of reports: 10.0.0.1 did 300 rows at 0.25
	// utilization, 10.0.0.2 100 rows at 0.5.
	for range 2 {
		if err := st.Send(loadRequest(report("10.0.0.1", 80, 150, 0.25, 10), report("10.0.0.2", 80, 50, 0.5, 10))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		n := len(l.acc)
		var rows float64
		if a := l.acc[endpointKey{ClusterName("m", "1"), "10.0.0.2:80"}]; a != nil {
			rows = a.rows
		}
		l.mu.Unlock()
		if n == 2 && rows == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reports not ingested")
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.mu.Lock()
	l.last = time.Now().Add(-time.Second)
	l.mu.Unlock()
	pushed, err := l.recompute(context.Background(), time.Now())
	if err != nil || !pushed {
		t.Fatalf("recompute: pushed %v, %v", pushed, err)
	}
	// Capacities 300/0.25 = 1200 and 100/0.5 = 200 rows/s: weights 1000
	// and 167; the endpoint of weight 0 stays out.
	w := weightsOf(t, srv)
	if w["10.0.0.1"] != 1000 || w["10.0.0.2"] < 160 || w["10.0.0.2"] > 173 || len(w) != 2 {
		t.Errorf("weights %v", w)
	}
	ws := l.Weights()
	if len(ws) != 3 || ws[0].Weight != 1000 || ws[0].Capacity < 1100 || ws[2].Weight != 0 {
		t.Errorf("Weights() = %+v", ws)
	}
	if cfg.Models[0].Versions[0].Endpoints[0].Weight != 1 {
		t.Error("the base config was modified")
	}
}

// TestLRSWeights: smoothing, bounds, hysteresis, static mode and a reload
// keeping the weights.
func TestLRSWeights(t *testing.T) {
	srv := New(Config{Epoch: 1})
	l := NewLRS(srv, LRSConfig{})
	ctx := context.Background()
	now := time.Now()
	l.last = now
	step := func(rows1, util1, rows2, util2 float64) bool {
		t.Helper()
		l.ingest(loadRequest(report("10.0.0.1", 80, rows1, util1, 4), report("10.0.0.2", 80, rows2, util2, 4)))
		now = now.Add(time.Second)
		pushed, err := l.recompute(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		return pushed
	}
	// Static: estimates, no push.
	if _, err := l.Update(ctx, adaptiveConfig(t, config.WeightsStatic)); err != nil {
		t.Fatal(err)
	}
	if step(300, 1, 100, 1) {
		t.Error("static mode pushed")
	}
	if w := weightsOf(t, srv); w["10.0.0.1"] != 1 || w["10.0.0.2"] != 1 {
		t.Errorf("static weights %v", w)
	}
	// Adaptive: the reload itself applies the estimates (3:1).
	if _, err := l.Update(ctx, adaptiveConfig(t, config.WeightsAdaptive)); err != nil {
		t.Fatal(err)
	}
	if w := weightsOf(t, srv); w["10.0.0.1"] != 1000 || w["10.0.0.2"] != 333 {
		t.Errorf("adaptive weights %v", w)
	}
	// The same load again: no push (hysteresis). A 5% change: none.
	if step(300, 1, 100, 1) || step(300, 1, 105, 1) {
		t.Error("pushed without a change above the hysteresis")
	}
	// A large change moves the EWMA by more than 10%: a push.
	if !step(300, 1, 300, 1) {
		t.Error("no push after a large change")
	}
	w := weightsOf(t, srv)
	if w["10.0.0.2"] <= 400 || w["10.0.0.2"] >= 1000 {
		t.Errorf("smoothed weight %v: want between the old and the new", w)
	}
	// Bounds: an endpoint of almost no capacity gets at least 1; an idle
	// one's utilization is taken as at least 0.05.
	for range 30 {
		step(1e6, 1, 0, 0.001)
	}
	if w := weightsOf(t, srv); w["10.0.0.1"] != MaxAdaptiveWeight || w["10.0.0.2"] != MinAdaptiveWeight {
		t.Errorf("bounded weights %v", w)
	}
	// An interval without reports changes nothing.
	now = now.Add(time.Second)
	if pushed, _ := l.recompute(ctx, now); pushed {
		t.Error("pushed without reports")
	}
}

func TestMoved(t *testing.T) {
	a := endpointKey{"c", "a"}
	b := endpointKey{"c", "b"}
	for _, c := range []struct {
		prev, next map[endpointKey]int
		want       bool
	}{
		{nil, nil, false},
		{nil, map[endpointKey]int{a: 1}, true},
		{map[endpointKey]int{a: 100}, map[endpointKey]int{a: 110}, false},
		{map[endpointKey]int{a: 100}, map[endpointKey]int{a: 111}, true},
		{map[endpointKey]int{a: 100}, map[endpointKey]int{b: 100}, true},
		{map[endpointKey]int{a: 1}, map[endpointKey]int{a: 2}, true},
	} {
		if got := moved(c.prev, c.next, 0.1); got != c.want {
			t.Errorf("moved(%v, %v) = %v", c.prev, c.next, got)
		}
	}
}
