package xdsclient

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/batchmesh/batchmesh/internal/loadreport"
)

// The load metric names of the LRS reports; they match those that
// internal/xdsserver reads (MetricRows and the others), which a test checks.
const (
	metricRows        = "rows"
	metricUtilization = "utilization"
	metricRPS         = "rps"
	metricLatencyMS   = "latency_ms"
)

// minReportInterval bounds the interval a server may ask for.
const minReportInterval = 100 * time.Millisecond

// RunLRS reports the load that agg gathers to the control plane's
// LoadReportingService (envoy.service.load_stats.v3) until ctx ends: it
// opens StreamLoadStats on the same server as ADS, sends the node first,
// and then, every load_reporting_interval the server asks for, the
// per-endpoint stats since the last report (see xdsserver's Metric
// constants for the encoding). Stats gathered while no stream is up are
// dropped. When the stream fails it reconnects with the ADS backoff. It
// returns nil once ctx ends.
func (c *Client) RunLRS(ctx context.Context, agg *loadreport.Aggregator) error {
	r := retrier{min: c.cfg.BackoffMin, max: c.cfg.BackoffMax, rand: rand.Float64}
	r.run(ctx, func(ctx context.Context) bool {
		progress, err := c.lrsStream(ctx, agg)
		if ctx.Err() == nil {
			c.log.Warn("lrs stream failed", "server", c.cfg.Server, "err", err)
		}
		return progress
	})
	return nil
}

func (c *Client) lrsStream(ctx context.Context, agg *loadreport.Aggregator) (progress bool, err error) {
	conn, err := c.dial()
	if err != nil {
		return false, fmt.Errorf("xdsclient: lrs: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	st, err := lrsv3.NewLoadReportingServiceClient(conn).StreamLoadStats(ctx)
	if err != nil {
		return false, fmt.Errorf("xdsclient: lrs: %w", err)
	}
	if err := st.Send(&lrsv3.LoadStatsRequest{Node: c.node}); err != nil {
		return false, fmt.Errorf("xdsclient: lrs: %w", err)
	}
	intervals := make(chan time.Duration, 1)
	recvErr := make(chan error, 1)
	wg.Go(func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			d := max(resp.GetLoadReportingInterval().AsDuration(), minReportInterval)
			select {
			case intervals <- d:
			case <-ctx.Done():
				return
			}
		}
	})
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return progress, ctx.Err()
		case err := <-recvErr:
			return progress, fmt.Errorf("xdsclient: lrs: %w", err)
		case d := <-intervals:
			if ticker == nil {
				agg.Take() // start the first interval now
				last = time.Now()
				ticker = time.NewTicker(d)
				tick = ticker.C
			} else {
				ticker.Reset(d)
			}
			progress = true
		case now := <-tick:
			req := &lrsv3.LoadStatsRequest{Node: c.node, ClusterStats: clusterStats(agg.Take(), now.Sub(last))}
			last = now
			if err := st.Send(req); err != nil {
				return progress, fmt.Errorf("xdsclient: lrs: %w", err)
			}
		}
	}
}

// clusterStats encodes stats (sorted by cluster, as Take returns them) as
// one ClusterStats per cluster with a single locality.
func clusterStats(stats []loadreport.Stats, interval time.Duration) []*endpoint.ClusterStats {
	var out []*endpoint.ClusterStats
	var loc *endpoint.UpstreamLocalityStats
	for _, s := range stats {
		if len(out) == 0 || out[len(out)-1].ClusterName != s.Cluster {
			loc = &endpoint.UpstreamLocalityStats{Locality: &core.Locality{}}
			out = append(out, &endpoint.ClusterStats{
				ClusterName:           s.Cluster,
				UpstreamLocalityStats: []*endpoint.UpstreamLocalityStats{loc},
				LoadReportInterval:    durationpb.New(interval),
			})
		}
		host, portStr, _ := net.SplitHostPort(s.Endpoint)
		port, _ := strconv.ParseUint(portStr, 10, 32)
		ok, failed := uint64(s.Batches), uint64(s.Errors)
		es := &endpoint.UpstreamEndpointStats{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)},
			}}},
			TotalSuccessfulRequests: ok,
			TotalErrorRequests:      failed,
			TotalIssuedRequests:     ok + failed,
			LoadMetricStats: []*endpoint.EndpointLoadMetricStats{
				{MetricName: metricRows, NumRequestsFinishedWithMetric: ok, TotalMetricValue: float64(s.Rows)},
				{MetricName: metricLatencyMS, NumRequestsFinishedWithMetric: ok + failed, TotalMetricValue: float64(s.LatencySum) / float64(time.Millisecond)},
			},
		}
		if s.UtilSamples > 0 {
			n := uint64(s.UtilSamples)
			es.LoadMetricStats = append(es.LoadMetricStats,
				&endpoint.EndpointLoadMetricStats{MetricName: metricUtilization, NumRequestsFinishedWithMetric: n, TotalMetricValue: s.UtilSum},
				&endpoint.EndpointLoadMetricStats{MetricName: metricRPS, NumRequestsFinishedWithMetric: n, TotalMetricValue: s.RPSSum})
		}
		loc.UpstreamEndpointStats = append(loc.UpstreamEndpointStats, es)
		loc.TotalSuccessfulRequests += ok
		loc.TotalErrorRequests += failed
		loc.TotalIssuedRequests += ok + failed
	}
	return out
}
