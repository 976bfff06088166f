package xdsclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/xdsserver"
)

// The metric names are those the control plane reads.
func TestLRSMetricNames(t *testing.T) {
	if metricRows != xdsserver.MetricRows || metricUtilization != xdsserver.MetricUtilization ||
		metricRPS != xdsserver.MetricRPS || metricLatencyMS != xdsserver.MetricLatencyMS {
		t.Error("metric names differ from xdsserver's")
	}
}

func TestClusterStats(t *testing.T) {
	a := loadreport.New()
	a.Record("c1", "10.0.0.1:80", 4, 2*time.Millisecond, false, "TEXT application_utilization=0.5, rps_fractional=8")
	a.Record("c1", "10.0.0.1:80", 2, 4*time.Millisecond, false, "TEXT application_utilization=0.25, rps_fractional=4")
	a.Record("c1", "10.0.0.2:81", 0, time.Millisecond, true, "")
	a.Record("c2", "[::1]:82", 3, time.Millisecond, false, "")
	cs := clusterStats(a.Take(), time.Second)
	if len(cs) != 2 || cs[0].GetClusterName() != "c1" || cs[1].GetClusterName() != "c2" {
		t.Fatalf("clusters %v", cs)
	}
	if cs[0].GetLoadReportInterval().AsDuration() != time.Second {
		t.Errorf("interval %v", cs[0].GetLoadReportInterval())
	}
	loc := cs[0].GetUpstreamLocalityStats()[0]
	if loc.GetTotalSuccessfulRequests() != 2 || loc.GetTotalErrorRequests() != 1 || loc.GetTotalIssuedRequests() != 3 {
		t.Errorf("locality %v", loc)
	}
	e := loc.GetUpstreamEndpointStats()[0]
	if sa := e.GetAddress().GetSocketAddress(); sa.GetAddress() != "10.0.0.1" || sa.GetPortValue() != 80 {
		t.Errorf("address %v", sa)
	}
	metrics := map[string]*endpoint.EndpointLoadMetricStats{}
	for _, m := range e.GetLoadMetricStats() {
		metrics[m.GetMetricName()] = m
	}
	if m := metrics["rows"]; m.GetTotalMetricValue() != 6 || m.GetNumRequestsFinishedWithMetric() != 2 {
		t.Errorf("rows %v", m)
	}
	if m := metrics["utilization"]; m.GetTotalMetricValue() != 0.75 || m.GetNumRequestsFinishedWithMetric() != 2 {
		t.Errorf("utilization %v", m)
	}
	if m := metrics["rps"]; m.GetTotalMetricValue() != 12 {
		t.Errorf("rps %v", m)
	}
	if m := metrics["latency_ms"]; m.GetTotalMetricValue() != 6 {
		t.Errorf("latency %v", m)
	}
	if e2 := loc.GetUpstreamEndpointStats()[1]; e2.GetTotalErrorRequests() != 1 || len(e2.GetLoadMetricStats()) != 2 {
		t.Errorf("failed endpoint %v", e2)
	}
	if sa := cs[1].GetUpstreamLocalityStats()[0].GetUpstreamEndpointStats()[0].GetAddress().GetSocketAddress(); sa.GetAddress() != "::1" || sa.GetPortValue() != 82 {
		t.Errorf("IPv6 address %v", sa)
	}
}

// fakeLRS records the requests of every stream and asks for a short
// interval.
type fakeLRS struct {
	lrsv3.UnimplementedLoadReportingServiceServer
	mu   sync.Mutex
	reqs []*lrsv3.LoadStatsRequest
}

func (f *fakeLRS) StreamLoadStats(st lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	f.add(first)
	if err := st.Send(&lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(100 * time.Millisecond)}); err != nil {
		return err
	}
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		f.add(req)
	}
}

func (f *fakeLRS) add(r *lrsv3.LoadStatsRequest) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
}

func (f *fakeLRS) snapshot() []*lrsv3.LoadStatsRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*lrsv3.LoadStatsRequest(nil), f.reqs...)
}

// TestRunLRS: the node goes first, then the stats of each interval, and
// the client reconnects when the server goes away.
func TestRunLRS(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLRS{}
	g := grpc.NewServer()
	lrsv3.RegisterLoadReportingServiceServer(g, f)
	go func() { _ = g.Serve(lis) }()
	c, err := New(Config{Server: lis.Addr().String(), NodeID: "n1", NodeCluster: "g", BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	agg := loadreport.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.RunLRS(ctx, agg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunLRS: %v", err)
		}
	}()
	var rows float64
	deadline := time.Now().Add(waitTimeout)
	for rows < 100 {
		agg.Record("batchmesh|m|1", "127.0.0.1:9", 10, time.Millisecond, false, "TEXT application_utilization=0.5")
		time.Sleep(5 * time.Millisecond)
		rows = 0
		for _, r := range f.snapshot() {
			for _, cs := range r.GetClusterStats() {
				for _, e := range cs.GetUpstreamLocalityStats()[0].GetUpstreamEndpointStats() {
					rows += e.GetLoadMetricStats()[0].GetTotalMetricValue()
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %v rows reported", rows)
		}
	}
	reqs := f.snapshot()
	if reqs[0].GetNode().GetId() != "n1" || reqs[0].GetNode().GetCluster() != "g" || len(reqs[0].GetClusterStats()) != 0 {
		t.Errorf("first request %v", reqs[0])
	}
	g.Stop()
	// A new server on the same address gets a new stream.
	lis2, err := net.Listen("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f2 := &fakeLRS{}
	g2 := grpc.NewServer()
	lrsv3.RegisterLoadReportingServiceServer(g2, f2)
	go func() { _ = g2.Serve(lis2) }()
	defer g2.Stop()
	for len(f2.snapshot()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunLRSControlPlane: reports from RunLRS reach the control plane's
// capacity estimates.
func TestRunLRSControlPlane(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := xdsserver.New(xdsserver.Config{Epoch: 1})
	l := xdsserver.NewLRS(srv, xdsserver.LRSConfig{ReportInterval: 100 * time.Millisecond, WeightInterval: 200 * time.Millisecond})
	cfg, err := config.Parse("t.yaml", []byte("weights: adaptive\nmodels:\n  - name: m\n    versions: [{version: \"1\", endpoints: [{address: \"127.0.0.1:9\"}, {address: \"127.0.0.1:10\"}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Update(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	l.Register(g)
	go func() { _ = g.Serve(lis) }()
	defer g.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	c, err := New(Config{Server: lis.Addr().String(), NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	agg := loadreport.New()
	done := make(chan struct{})
	go func() { defer close(done); _ = c.RunLRS(ctx, agg) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(waitTimeout)
	for {
		// 127.0.0.1:9 does 3 times the rows of :10 at the same utilization.
		for range 3 {
			agg.Record("batchmesh|m|1", "127.0.0.1:9", 1, time.Millisecond, false, "TEXT application_utilization=0.5")
		}
		agg.Record("batchmesh|m|1", "127.0.0.1:10", 1, time.Millisecond, false, "TEXT application_utilization=0.5")
		time.Sleep(2 * time.Millisecond)
		ws := l.Weights()
		if len(ws) == 2 && ws[0].Weight > 0 && ws[1].Weight > 0 {
			r := float64(ws[1].Weight) / float64(ws[0].Weight)
			if r > 2.5 && r < 3.5 {
				t.Logf("weights %+v", ws)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("weights %+v, want 3:1 for :9", ws)
		}
	}
}
