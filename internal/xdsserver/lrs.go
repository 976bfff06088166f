package xdsserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/batchmesh/batchmesh/internal/config"
)

// The load metrics of an LRS report (UpstreamEndpointStats.load_metric_stats)
// that the control plane reads. Per endpoint and reporting interval, the
// sidecar sends:
//
//   - MetricRows: num_requests_finished_with_metric = successful batches,
//     total_metric_value = their rows;
//   - MetricUtilization: num = ORCA reports received, total = the sum of
//     their application_utilization (so the mean is total/num);
//   - MetricRPS: num = ORCA reports (as for MetricUtilization), total = the
//     sum of their rps_fractional (informational: the control plane uses
//     the rows the sidecars saw, not the rate the runtime measured);
//   - MetricLatencyMS: num = calls (successful or not), total = the sum of
//     their latencies in milliseconds.
//
// total_successful_requests and total_error_requests count the batches that
// succeeded and failed; total_issued_requests is their sum.
const (
	MetricRows        = "rows"
	MetricUtilization = "utilization"
	MetricRPS         = "rps"
	MetricLatencyMS   = "latency_ms"
)

// Defaults of LRSConfig.
const (
	DefaultReportInterval = time.Second
	DefaultWeightInterval = 2 * time.Second
	DefaultAlpha          = 0.3
	DefaultHysteresis     = 0.1
	// MaxAdaptiveWeight is the weight of the endpoint of most capacity in
	// its version; the others are in proportion, at least MinAdaptiveWeight.
	MaxAdaptiveWeight = 1000
	MinAdaptiveWeight = 1
	// minUtilization bounds the utilization capacity is divided by, so that
	// an idle endpoint's noise does not look like infinite capacity.
	minUtilization = 0.05
)

// LRSConfig configures an LRS. The zero value is valid.
type LRSConfig struct {
	// ReportInterval is the load_reporting_interval sent to the clients;
	// default DefaultReportInterval (1s).
	ReportInterval time.Duration
	// WeightInterval is how often Run recomputes the weights from the
	// reports received since the last time; default DefaultWeightInterval
	// (2s).
	WeightInterval time.Duration
	// Alpha is the EWMA factor of the capacity estimates; default
	// DefaultAlpha (0.3).
	Alpha float64
	// Hysteresis is the relative change of some weight below which no
	// update is pushed; default DefaultHysteresis (10%).
	Hysteresis float64
	// RequireClientCert refuses a stream whose peer has no verified TLS
	// client certificate, or whose first request's node id is not one of
	// the certificate's identities (see AuthorizeNode). Set it when the
	// gRPC server requires client certificates (mutual TLS).
	RequireClientCert bool
	Logger            *slog.Logger
}

// LRS serves envoy.service.load_stats.v3.LoadReportingService and, when the
// config has weights: adaptive, sets the endpoint weights of the configs it
// gives its Server from the reports.
//
// Each endpoint's capacity is estimated every WeightInterval as the rows
// per second reported by every sidecar together over the mean reported
// utilization (at least 0.05), and smoothed with an EWMA. Within a version
// the endpoint of most capacity gets MaxAdaptiveWeight and the others their
// share of it, bounded to [MinAdaptiveWeight, MaxAdaptiveWeight]; an
// endpoint with no estimate yet gets the mean of the others (the file's
// weights while none has one), and one of weight 0 in the file stays 0. A
// new config is pushed only when some weight moves by more than
// Hysteresis. An interval without reports for an endpoint leaves its
// estimate as it was.
//
// Feed it the file's configs with Update instead of calling the Server's
// Update: they are kept as the base whose endpoint weights are replaced.
type LRS struct {
	srv *Server
	cfg LRSConfig
	log *slog.Logger

	mu       sync.Mutex
	base     *config.Config
	acc      map[endpointKey]*endpointAcc // reports since the last recompute
	capacity map[endpointKey]float64      // EWMA of rows/s over utilization
	pushed   map[endpointKey]int          // the weights of the last push
	last     time.Time                    // of the last recompute
}

type endpointKey struct{ cluster, endpoint string }

type endpointAcc struct {
	batches, errors uint64
	rows            float64
	utilSum         float64
	utilSamples     uint64
}

// NewLRS returns an LRS that updates srv.
func NewLRS(srv *Server, cfg LRSConfig) *LRS {
	if cfg.ReportInterval <= 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.WeightInterval <= 0 {
		cfg.WeightInterval = DefaultWeightInterval
	}
	if cfg.Alpha <= 0 || cfg.Alpha > 1 {
		cfg.Alpha = DefaultAlpha
	}
	if cfg.Hysteresis <= 0 {
		cfg.Hysteresis = DefaultHysteresis
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &LRS{srv: srv, cfg: cfg, log: lg, acc: map[endpointKey]*endpointAcc{},
		capacity: map[endpointKey]float64{}, pushed: map[endpointKey]int{}, last: time.Now()}
}

// Register serves the LoadReportingService on g.
func (l *LRS) Register(g *grpc.Server) { lrsv3.RegisterLoadReportingServiceServer(g, l) }

// Update keeps cfg as the base config and updates the Server with it, its
// endpoint weights replaced by the computed ones in adaptive mode.
func (l *LRS) Update(ctx context.Context, cfg *config.Config) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	weights := l.weightsLocked(cfg)
	v, err := l.srv.Update(ctx, withWeights(cfg, weights))
	if err != nil {
		return v, err
	}
	l.base, l.pushed = cfg, weights
	return v, nil
}

// Run recomputes the weights every WeightInterval until ctx ends.
func (l *LRS) Run(ctx context.Context) {
	t := time.NewTicker(l.cfg.WeightInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if _, err := l.recompute(ctx, now); err != nil {
				l.log.Error("adaptive weights not pushed", "err", err)
			}
		}
	}
}

// recompute folds the reports since the last call into the capacity
// estimates and pushes new weights if adaptive and some weight moved by
// more than the hysteresis. It reports whether it pushed.
func (l *LRS) recompute(ctx context.Context, now time.Time) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	dt := now.Sub(l.last).Seconds()
	l.last = now
	acc := l.acc
	l.acc = map[endpointKey]*endpointAcc{}
	if dt <= 0 {
		return false, nil
	}
	for k, a := range acc {
		if a.utilSamples == 0 {
			continue // no ORCA report: no information on capacity
		}
		util := max(a.utilSum/float64(a.utilSamples), minUtilization)
		c := a.rows / dt / util
		if old, ok := l.capacity[k]; ok {
			c = l.cfg.Alpha*c + (1-l.cfg.Alpha)*old
		}
		l.capacity[k] = c
	}
	if l.base == nil || l.base.Weights != config.WeightsAdaptive {
		return false, nil
	}
	weights := l.weightsLocked(l.base)
	if !moved(l.pushed, weights, l.cfg.Hysteresis) {
		return false, nil
	}
	if _, err := l.srv.Update(ctx, withWeights(l.base, weights)); err != nil {
		return false, err
	}
	l.log.Info("adaptive weights pushed", "weights", len(weights))
	l.pushed = weights
	return true, nil
}

// moved reports whether next differs from prev in its endpoints or in some
// weight by more than the relative threshold h.
func moved(prev, next map[endpointKey]int, h float64) bool {
	if len(prev) != len(next) {
		return true
	}
	for k, w := range next {
		p, ok := prev[k]
		if !ok {
			return true
		}
		if math.Abs(float64(w-p)) > h*float64(max(p, 1)) {
			return true
		}
	}
	return false
}

// weightsLocked computes the weight of every endpoint of cfg from the
// capacity estimates; nil unless cfg is adaptive.
func (l *LRS) weightsLocked(cfg *config.Config) map[endpointKey]int {
	if cfg == nil || cfg.Weights != config.WeightsAdaptive {
		return nil
	}
	out := map[endpointKey]int{}
	for _, m := range cfg.Models {
		for _, v := range m.Versions {
			cluster := ClusterName(m.Name, v.Version)
			var maxCap float64
			for _, e := range v.Endpoints {
				if c, ok := l.capacity[endpointKey{cluster, e.Address}]; ok && e.Weight > 0 {
					maxCap = max(maxCap, c)
				}
			}
			if maxCap <= 0 {
				continue // no estimate: the file's weights
			}
			var sum, n int
			unknown := []endpointKey{}
			for _, e := range v.Endpoints {
				k := endpointKey{cluster, e.Address}
				c, ok := l.capacity[k]
				switch {
				case e.Weight <= 0:
					out[k] = 0
				case !ok:
					unknown = append(unknown, k)
				default:
					w := int(math.Round(MaxAdaptiveWeight * c / maxCap))
					w = min(max(w, MinAdaptiveWeight), MaxAdaptiveWeight)
					out[k] = w
					sum += w
					n++
				}
			}
			for _, k := range unknown {
				out[k] = max(sum/max(n, 1), MinAdaptiveWeight)
			}
		}
	}
	return out
}

// withWeights returns a copy of cfg with the given endpoint weights; cfg
// itself is not modified. Endpoints absent from weights keep theirs.
func withWeights(cfg *config.Config, weights map[endpointKey]int) *config.Config {
	if len(weights) == 0 {
		return cfg
	}
	cp := *cfg
	cp.Models = slices.Clone(cfg.Models)
	for i := range cp.Models {
		m := &cp.Models[i]
		m.Versions = slices.Clone(m.Versions)
		for j := range m.Versions {
			v := &m.Versions[j]
			v.Endpoints = slices.Clone(v.Endpoints)
			cluster := ClusterName(m.Name, v.Version)
			for k := range v.Endpoints {
				if w, ok := weights[endpointKey{cluster, v.Endpoints[k].Address}]; ok {
					v.Endpoints[k].Weight = w
				}
			}
		}
	}
	return &cp
}

// EndpointWeight is one endpoint's adaptive state, for /snapshot.
type EndpointWeight struct {
	Cluster  string  `json:"cluster"`
	Endpoint string  `json:"endpoint"`
	Weight   int     `json:"weight"`              // last pushed; 0 when not adaptive
	Capacity float64 `json:"capacity_rows_per_s"` // the smoothed estimate
}

// Weights returns the capacity estimate and last pushed weight of every
// endpoint known, sorted by cluster and endpoint.
func (l *LRS) Weights() []EndpointWeight {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := map[endpointKey]bool{}
	for k := range l.capacity {
		keys[k] = true
	}
	for k := range l.pushed {
		keys[k] = true
	}
	out := make([]EndpointWeight, 0, len(keys))
	for k := range keys {
		out = append(out, EndpointWeight{Cluster: k.cluster, Endpoint: k.endpoint, Weight: l.pushed[k],
			Capacity: math.Round(l.capacity[k]*100) / 100})
	}
	slices.SortFunc(out, func(a, b EndpointWeight) int {
		if a.Cluster != b.Cluster {
			if a.Cluster < b.Cluster {
				return -1
			}
			return 1
		}
		if a.Endpoint < b.Endpoint {
			return -1
		}
		if a.Endpoint > b.Endpoint {
			return 1
		}
		return 0
	})
	return out
}

// StreamLoadStats answers the client's first request with every cluster
// (send_all_clusters) and the reporting interval, then folds in every
// report until the stream ends.
func (l *LRS) StreamLoadStats(stream lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if l.cfg.RequireClientCert {
		if err := AuthorizeNode(stream.Context(), first.GetNode().GetId()); err != nil {
			l.log.Warn("lrs report refused", "node", first.GetNode().GetId(), "err", err)
			return err
		}
	}
	l.mu.Lock()
	var clusters []string
	if l.base != nil {
		for _, m := range l.base.Models {
			for _, v := range m.Versions {
				clusters = append(clusters, ClusterName(m.Name, v.Version))
			}
		}
	}
	l.mu.Unlock()
	if err := stream.Send(&lrsv3.LoadStatsResponse{
		Clusters: clusters, SendAllClusters: true,
		LoadReportingInterval: durationpb.New(l.cfg.ReportInterval),
	}); err != nil {
		return err
	}
	l.log.Debug("lrs stream", "node", first.GetNode().GetId())
	l.ingest(first)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		l.ingest(req)
	}
}

// ingest adds one report's endpoint stats to the accumulators.
func (l *LRS) ingest(req *lrsv3.LoadStatsRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cs := range req.GetClusterStats() {
		for _, loc := range cs.GetUpstreamLocalityStats() {
			for _, es := range loc.GetUpstreamEndpointStats() {
				sa := es.GetAddress().GetSocketAddress()
				if sa == nil {
					continue
				}
				k := endpointKey{cs.GetClusterName(), net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))}
				a := l.acc[k]
				if a == nil {
					a = &endpointAcc{}
					l.acc[k] = a
				}
				a.batches += es.GetTotalSuccessfulRequests()
				a.errors += es.GetTotalErrorRequests()
				for _, m := range es.GetLoadMetricStats() {
					switch m.GetMetricName() {
					case MetricRows:
						a.rows += m.GetTotalMetricValue()
					case MetricUtilization:
						a.utilSum += m.GetTotalMetricValue()
						a.utilSamples += m.GetNumRequestsFinishedWithMetric()
					}
				}
			}
		}
	}
}
