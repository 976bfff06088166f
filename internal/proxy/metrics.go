package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

type metrics struct {
	requests     metric.Int64Counter
	duration     metric.Float64Histogram
	upRequests   metric.Int64Counter
	upDuration   metric.Float64Histogram
	attrs        sync.Map // attribute key string → metric.MeasurementOption
	weightGauge  metric.Int64ObservableGauge
	registration metric.Registration
}

var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newMetrics(m metric.Meter, cfg *config.Config) (*metrics, error) {
	pm := &metrics{}
	var errs [5]error
	pm.requests, errs[0] = m.Int64Counter("batchmesh_requests",
		metric.WithDescription("Application requests answered, by status code and cache result."))
	pm.duration, errs[1] = m.Float64Histogram("batchmesh_request_duration_seconds",
		metric.WithDescription("Time to answer an application request."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	pm.upRequests, errs[2] = m.Int64Counter("batchmesh_upstream_requests",
		metric.WithDescription("Calls to model runtimes (batches and pass-through), by status code."))
	pm.upDuration, errs[3] = m.Float64Histogram("batchmesh_upstream_duration_seconds",
		metric.WithDescription("Latency of calls to model runtimes."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(latencyBuckets...))
	pm.weightGauge, errs[4] = m.Int64ObservableGauge("batchmesh_endpoint_weight",
		metric.WithDescription("The weight each endpoint is picked with."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	type weight struct {
		attrs metric.ObserveOption
		w     int64
	}
	var weights []weight
	for _, mc := range cfg.Models {
		for _, v := range mc.Versions {
			for _, e := range v.Endpoints {
				weights = append(weights, weight{metric.WithAttributeSet(attribute.NewSet(
					attribute.String("model", mc.Name), attribute.String("version", v.Version),
					attribute.String("endpoint", e.Address))), int64(e.Weight)})
			}
		}
	}
	var err error
	pm.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, w := range weights {
			o.ObserveInt64(pm.weightGauge, w.w, w.attrs)
		}
		return nil
	}, pm.weightGauge)
	if err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	return pm, nil
}

// opt returns a cached attribute set for the label values kv (pairs).
func (pm *metrics) opt(kv ...string) metric.MeasurementOption {
	key := ""
	for _, s := range kv {
		key += s + "\x00"
	}
	if o, ok := pm.attrs.Load(key); ok {
		return o.(metric.MeasurementOption)
	}
	as := make([]attribute.KeyValue, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		as = append(as, attribute.String(kv[i], kv[i+1]))
	}
	o := metric.WithAttributeSet(attribute.NewSet(as...))
	pm.attrs.Store(key, o)
	return o
}

func (pm *metrics) request(model string, code int, cache string, d time.Duration) {
	ctx := context.Background()
	pm.requests.Add(ctx, 1, pm.opt("model", model, "code", strconv.Itoa(code), "cache", cache))
	pm.duration.Record(ctx, d.Seconds(), pm.opt("model", model))
}

func (pm *metrics) upstream(model, endpoint string, code int, d time.Duration) {
	ctx := context.Background()
	pm.upRequests.Add(ctx, 1, pm.opt("model", model, "endpoint", endpoint, "code", strconv.Itoa(code)))
	pm.upDuration.Record(ctx, d.Seconds(), pm.opt("model", model, "endpoint", endpoint))
}

// caller sends the lane's batches through the upstream client and records
// each call.
type caller struct {
	up    *upstream.Client
	m     *metrics
	model string
}

func (c *caller) Call(ctx context.Context, endpoint string, req *inference.Request, traceparent string) ([]inference.Tensor, error) {
	var headers []upstream.Header
	if traceparent != "" {
		headers = []upstream.Header{{Key: headerTrace, Value: traceparent}}
	}
	start := time.Now()
	reply, err := c.up.Infer(ctx, endpoint, req, headers)
	code := reply.Status
	if err != nil && code == 0 {
		code = inference.HTTPStatus(err)
	}
	c.m.upstream(c.model, endpoint, code, time.Since(start))
	if err != nil {
		return nil, err
	}
	return reply.Response.Outputs, nil
}
