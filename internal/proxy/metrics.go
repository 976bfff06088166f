package proxy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/config"
	"github.com/batchmesh/batchmesh/internal/health"
	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/loadreport"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

type metrics struct {
	requests   metric.Int64Counter
	duration   metric.Float64Histogram
	upRequests metric.Int64Counter
	upDuration metric.Float64Histogram
	// attrs holds each series' attribute set, built once: an immutable
	// map replaced whole when a series is new (rare: models × endpoints ×
	// codes), so that a request's lookups take no lock and allocate
	// nothing (a sync.Map boxes the key on every Load).
	attrs       atomic.Pointer[map[labels]series]
	attrsMu     sync.Mutex // serialises the replacements of attrs
	weightGauge metric.Int64ObservableGauge
	availGauge  metric.Int64ObservableGauge
	// fastServed counts the requests the pass-through fast path served,
	// exported by fastCounter when scraped: no instrument call per request.
	fastServed   atomic.Int64
	fastCounter  metric.Int64ObservableCounter
	registration metric.Registration
}

var latencyBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// endpointWeight is one sample of batchmesh_endpoint_weight.
type endpointWeight struct {
	model, version, endpoint string
	weight                   int64
}

// versionAvailable is one sample of batchmesh_version_available.
type versionAvailable struct {
	model, version string
	available      bool
}

func newMetrics(m metric.Meter, weights func() []endpointWeight, available func() []versionAvailable) (*metrics, error) {
	pm := &metrics{}
	var errs [7]error
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
	pm.availGauge, errs[5] = m.Int64ObservableGauge("batchmesh_version_available",
		metric.WithDescription("1 while some endpoint of the version is healthy and it takes its share of the split; 0 while it is out of it."))
	pm.fastCounter, errs[6] = m.Int64ObservableCounter("batchmesh_fast_path_requests",
		metric.WithDescription("Pass-through requests served by the pass-through fast path; the others, and every batched request, went through the full handler."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	var err error
	pm.registration, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, w := range weights() {
			o.ObserveInt64(pm.weightGauge, w.weight, metric.WithAttributeSet(attribute.NewSet(
				attribute.String("model", w.model), attribute.String("version", w.version),
				attribute.String("endpoint", w.endpoint))))
		}
		for _, a := range available() {
			v := int64(0)
			if a.available {
				v = 1
			}
			o.ObserveInt64(pm.availGauge, v, metric.WithAttributeSet(attribute.NewSet(
				attribute.String("model", a.model), attribute.String("version", a.version))))
		}
		o.ObserveInt64(pm.fastCounter, pm.fastServed.Load())
		return nil
	}, pm.weightGauge, pm.availGauge, pm.fastCounter)
	if err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	return pm, nil
}

// labels identifies one attribute set; absent labels are empty.
type labels struct {
	model, endpoint, cache string
	code                   int
	withCode               bool
}

// series is the attribute set of one series, as the options of an Add and
// of a Record: passed with "...", a stored slice is not copied, where a
// literal option escapes to a new slice on every call.
type series struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

// opt returns the cached attribute set for l, building it on first use.
func (pm *metrics) opt(l labels) series {
	if m := pm.attrs.Load(); m != nil {
		if o, ok := (*m)[l]; ok {
			return o
		}
	}
	pm.attrsMu.Lock()
	defer pm.attrsMu.Unlock()
	old := pm.attrs.Load()
	if old != nil {
		if o, ok := (*old)[l]; ok {
			return o
		}
	}
	as := []attribute.KeyValue{attribute.String("model", l.model)}
	if l.endpoint != "" {
		as = append(as, attribute.String("endpoint", l.endpoint))
	}
	if l.withCode {
		as = append(as, attribute.String("code", strconv.Itoa(l.code)))
	}
	if l.cache != "" {
		as = append(as, attribute.String("cache", l.cache))
	}
	set := metric.WithAttributeSet(attribute.NewSet(as...))
	o := series{add: []metric.AddOption{set}, record: []metric.RecordOption{set}}
	next := map[labels]series{}
	if old != nil {
		next = maps.Clone(*old)
	}
	next[l] = o
	pm.attrs.Store(&next)
	return o
}

// track exports the series of st's models at zero, so that they exist on
// /metrics from start-up (and from the configuration change that adds a
// model): a 200 of every cache result the model can give, and a 200 from
// every endpoint. Histograms appear with their first observation: the
// OpenTelemetry API cannot create an empty one.
func (pm *metrics) track(st *state) {
	ctx := context.Background()
	for _, name := range st.names {
		m := st.models[name]
		results := []string{cacheBypass}
		if m.cfg.Cache.Enabled {
			results = []string{cacheHit, cacheMiss, cachePartial, cacheCoalesced, cacheBypass}
		}
		for _, r := range results {
			pm.requests.Add(ctx, 0, pm.opt(labels{model: name, code: 200, withCode: true, cache: r}).add...)
		}
		for _, v := range m.versions {
			for _, e := range v.cfg.Endpoints {
				pm.upRequests.Add(ctx, 0, pm.opt(labels{model: name, endpoint: e.Address, code: 200, withCode: true}).add...)
			}
		}
	}
}

func (pm *metrics) request(model string, code int, cache string, d time.Duration) {
	ctx := context.Background()
	pm.requests.Add(ctx, 1, pm.opt(labels{model: model, code: code, withCode: true, cache: cache}).add...)
	pm.duration.Record(ctx, d.Seconds(), pm.opt(labels{model: model}).record...)
}

func (pm *metrics) upstream(model, endpoint string, code int, d time.Duration) {
	ctx := context.Background()
	pm.upRequests.Add(ctx, 1, pm.opt(labels{model: model, endpoint: endpoint, code: code, withCode: true}).add...)
	pm.upDuration.Record(ctx, d.Seconds(), pm.opt(labels{model: model, endpoint: endpoint}).record...)
}

// passSeries are the series of a pass-through answer: its request and its
// upstream call, both counted and timed.
type passSeries struct {
	model, endpoint string
	code            int
	req, dur        series
	up, upDur       series
}

// passed records a pass-through answer of model from endpoint with code,
// which took d both as a request and as an upstream call. last caches the
// series of the caller's previous answer: a connection's answers mostly
// share them, and looking them up is a third of the cost.
func (pm *metrics) passed(last *passSeries, model, endpoint string, code int, d time.Duration) {
	if last.model != model || last.endpoint != endpoint || last.code != code {
		*last = passSeries{
			model: model, endpoint: endpoint, code: code,
			req:   pm.opt(labels{model: model, code: code, withCode: true, cache: cacheBypass}),
			dur:   pm.opt(labels{model: model}),
			up:    pm.opt(labels{model: model, endpoint: endpoint, code: code, withCode: true}),
			upDur: pm.opt(labels{model: model, endpoint: endpoint}),
		}
	}
	ctx, s := context.Background(), d.Seconds()
	pm.upRequests.Add(ctx, 1, last.up.add...)
	pm.upDuration.Record(ctx, s, last.upDur.record...)
	pm.requests.Add(ctx, 1, last.req.add...)
	pm.duration.Record(ctx, s, last.dur.record...)
}

// callFailed reports whether an upstream call counts as a failure for
// outlier detection: no answer (connection error, timeout) or a 5xx.
func callFailed(err error, code int) bool {
	if err != nil {
		return errors.Is(err, inference.ErrUpstream) || errors.Is(err, inference.ErrUnavailable) || errors.Is(err, inference.ErrDeadline)
	}
	return code >= 500
}

// caller sends the lane's batches through the upstream client and records
// each call.
type caller struct {
	up    *upstream.Client
	m     *metrics
	model string
	prop  propagation.TextMapPropagator // nil when tracing is off
	// load, when not nil, receives every call for the LRS reports, keyed
	// by cluster.
	load    *loadreport.Aggregator
	cluster string
	// lane, when not nil, is told each answer's runtime queue (weights:
	// adaptive). Set once, before the lane takes requests.
	lane *batch.Lane
	// health counts each call's outcome for outlier detection.
	health *health.Table
	// protocol is the runtime's API: config.ProtocolV2 (v2 infer),
	// ProtocolOpenAI (/v1/embeddings) or ProtocolTFServing (:predict).
	protocol string
	// grpc sends to the endpoints isGRPC names (endpoint protocol: grpc).
	grpc   *upstream.GRPC
	isGRPC func(address string) bool
}

// send makes one upstream call in the runtime's protocol. A runtime that
// answers 429 (busy, not broken: text-embeddings-inference's "Model is
// overloaded", a v2 server's full queue) is backed off from and retried
// within ctx's deadline (retryOverloaded), whatever its protocol.
func (c *caller) send(ctx context.Context, endpoint string, req *inference.Request, headers []upstream.Header) (upstream.Reply, error) {
	call := c.up.Infer
	switch c.protocol {
	case config.ProtocolOpenAI:
		call = c.up.Embed
	case config.ProtocolTFServing:
		call = c.up.Predict
	}
	if c.isGRPC != nil && c.isGRPC(endpoint) {
		call = c.grpc.Infer
	}
	return retryOverloaded(ctx, endpoint, func() (upstream.Reply, error) {
		start := time.Now()
		reply, err := call(ctx, endpoint, req, headers)
		if reply.Status == fasthttp.StatusTooManyRequests {
			c.m.upstream(c.model, endpoint, reply.Status, time.Since(start)) // each refused try; Call records the last
		}
		return reply, err
	})
}

func (c *caller) Call(ctx context.Context, endpoint string, req *inference.Request) ([]inference.Tensor, error) {
	var headers []upstream.Header
	if c.prop != nil && trace.SpanContextFromContext(ctx).IsValid() {
		c.prop.Inject(ctx, headersCarrier{&headers})
	}
	start := time.Now()
	reply, err := c.send(ctx, endpoint, req, headers)
	code := reply.Status
	if err != nil && code == 0 {
		code = inference.HTTPStatus(err)
	}
	elapsed := time.Since(start)
	c.m.upstream(c.model, endpoint, code, elapsed)
	if !errors.Is(ctx.Err(), context.Canceled) { // a caller gone says nothing of the endpoint
		c.health.ReportCall(endpoint, callFailed(err, code))
	}
	if c.load != nil || c.lane != nil {
		var rep *loadreport.Report
		if reply.LoadReport != "" {
			if r, perr := loadreport.Parse(reply.LoadReport); perr == nil {
				rep = &r
			}
		}
		rows, _ := req.Rows()
		c.load.RecordReport(c.cluster, endpoint, rows, elapsed, err != nil, rep)
		if q, ok := rep.Queue(); ok && c.lane != nil && err == nil {
			c.lane.Observe(endpoint, q)
		}
	}
	if err != nil {
		return nil, err
	}
	return reply.Response.Outputs, nil
}

// track exports st's series at zero: the proxy's own and the cache's.
func (p *Proxy) track(st *state) {
	p.m.track(st)
	for _, name := range st.names {
		p.cache.Track(name)
	}
}
