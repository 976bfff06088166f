package proxy

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/cache"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/grpcapi"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// ModelInfer decodes the call to canonical tensors and runs it as the REST
// infer route does (runInfer), so that gRPC and REST callers of a model
// version share batches, the row cache and coalescing. The deadline is the
// model's timeout, shortened by the call's gRPC deadline and by the
// x-batchmesh-timeout-ms metadata; priority, tenant and cache control come
// from the metadata keys named like the HTTP headers. The answer is raw
// when the call was; the header metadata carries x-batchmesh-cache,
// -batch-size and -upstream.
func (s grpcService) ModelInfer(ctx context.Context, in *grpcapi.ModelInferRequest) (*grpcapi.ModelInferResponse, error) {
	p := s.p
	start := time.Now()
	md, _ := metadata.FromIncomingContext(ctx)
	m, err := p.grpcModel(in.GetModelName())
	if err != nil {
		return nil, grpcError(err, 0)
	}
	name := m.cfg.Name
	v, err := p.pickVersion(m, in.GetModelVersion())
	if err != nil {
		p.m.request(name, inference.HTTPStatus(err), cacheBypass, time.Since(start))
		return nil, grpcError(err, time.Second)
	}
	timeout, err := metadataTimeout(md, m.cfg.Batching.Timeout)
	if err != nil {
		p.m.request(name, inference.HTTPStatus(err), cacheBypass, time.Since(start))
		return nil, grpcError(err, 0)
	}
	ctx, cancel := context.WithDeadline(ctx, start.Add(timeout))
	defer cancel()
	ctx, span := p.startGRPCSpan(ctx, md, name)
	var (
		out  *grpcapi.ModelInferResponse
		res  cachedResult
		rows int
		prio batch.Priority
	)
	// As for REST (infer): a call that named no version fails over to
	// another version of the split when its version cannot serve it.
	v = p.failover(ctx, m, v, in.GetModelVersion() != "", func(v *version) error {
		out, res, rows, prio, err = p.grpcInfer(ctx, md, m, v, in)
		return err
	})
	code := 200
	if err != nil {
		code = inference.HTTPStatus(err)
		if res.status == "" {
			res.status = cacheBypass
			if m.cfg.Cache.Enabled {
				res.status = cacheMiss
			}
		}
	}
	p.m.request(name, code, res.status, time.Since(start))
	setGRPCHeaders(ctx, &res)
	if span.IsRecording() {
		endServerSpan(span, code, err,
			attribute.String("rpc.system", "grpc"),
			attribute.String("rpc.method", "ModelInfer"),
			attribute.String("batchmesh.version", v.cfg.Version),
			attribute.Int("batchmesh.rows", rows),
			attribute.String("batchmesh.cache", res.status),
			attribute.Float64("batchmesh.queue_wait_ms", float64(res.queueWait)/1e6),
			attribute.String("batchmesh.priority", prio.String()),
			attribute.Int("batchmesh.batch_rows", res.batchRows))
	}
	if err != nil {
		retry := time.Second
		if v.lane != nil {
			retry = v.lane.RetryAfter()
		}
		return nil, grpcError(err, retry)
	}
	return out, nil
}

// grpcInfer decodes in, runs it through v's lane (or, with batching off,
// straight to one endpoint) and encodes the answer in the caller's form.
func (p *Proxy) grpcInfer(ctx context.Context, md metadata.MD, m *model, v *version, in *grpcapi.ModelInferRequest) (out *grpcapi.ModelInferResponse, res cachedResult, rows int, prio batch.Priority, err error) {
	prio = batch.PriorityNormal
	req, raw, err := codec.DecodeGRPCRequest(in)
	if err != nil {
		return nil, res, 0, prio, err
	}
	if rows, err = req.Rows(); err != nil {
		return nil, res, 0, prio, err
	}
	if prio, err = batch.ParsePriority(mdGet(md, HeaderPriority)); err != nil {
		return nil, res, rows, batch.PriorityNormal, err
	}
	if v.lane == nil {
		res, err = p.inferUnbatched(ctx, m, v, &req)
	} else {
		noCache, noStore := cacheControl([]byte(strings.Join(md.Get("cache-control"), ",")))
		res, err = p.runInfer(ctx, m, v, &req, rows, prio, mdGet(md, HeaderTenant), cache.Options{NoLookup: noCache, NoStore: noStore})
	}
	if err != nil {
		return nil, res, rows, prio, err
	}
	resp := inference.Response{ModelName: m.cfg.Name, ModelVersion: v.cfg.Version, ID: req.ID, Outputs: res.outputs}
	out, err = codec.EncodeGRPCResponse(&resp, raw)
	return out, res, rows, prio, err
}

// inferUnbatched sends req to one healthy endpoint of v as it is: the
// model has batching off, which for REST means pass-through.
func (p *Proxy) inferUnbatched(ctx context.Context, m *model, v *version, req *inference.Request) (cachedResult, error) {
	res := cachedResult{status: cacheBypass}
	ep, err := p.pickEndpoint(v)
	if err != nil {
		return res, err
	}
	up := *req
	up.Model, up.Version = m.cfg.Name, v.cfg.Version
	up.Parameters, up.Outputs = upstreamParams(req.Parameters), upstreamOutputs(req.Outputs)
	t0 := time.Now()
	call := p.up.Infer
	if p.isGRPC(ep) {
		call = p.grpcUp.Infer
	}
	reply, err := call(ctx, ep, &up, nil)
	code := reply.Status
	if err != nil && code == 0 {
		code = inference.HTTPStatus(err)
	}
	p.m.upstream(m.cfg.Name, ep, code, time.Since(t0))
	p.health.ReportCall(ep, callFailed(err, code))
	if err != nil {
		return res, err
	}
	res.outputs, res.endpoint = reply.Response.Outputs, ep
	return res, nil
}

// metadataTimeout is timeout, or the x-batchmesh-timeout-ms of the call when
// that is shorter.
func metadataTimeout(md metadata.MD, timeout time.Duration) (time.Duration, error) {
	s := mdGet(md, HeaderTimeoutMs)
	if s == "" {
		return timeout, nil
	}
	ms, err := strconv.ParseUint(s, 10, 31)
	if err != nil || ms == 0 {
		return 0, inference.Errorf(inference.KindInvalid,
			"proxy: metadata %s must be a positive whole number of milliseconds, got %q", strings.ToLower(HeaderTimeoutMs), s)
	}
	return min(timeout, time.Duration(ms)*time.Millisecond), nil
}

// mdGet returns the first value of the metadata key named like the HTTP
// header h (gRPC metadata keys are lower case).
func mdGet(md metadata.MD, h string) string {
	if vs := md.Get(h); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// setGRPCHeaders sends the X-Batchmesh-* answer headers as header
// metadata, as the REST route sets them.
func setGRPCHeaders(ctx context.Context, res *cachedResult) {
	md := metadata.Pairs(strings.ToLower(HeaderCache), res.status)
	if res.batchRows > 0 {
		md.Append(strings.ToLower(HeaderBatchSize), strconv.Itoa(res.batchRows))
		md.Append(strings.ToLower(HeaderUpstream), res.endpoint)
	}
	_ = grpc.SetHeader(ctx, md)
}

// metadataCarrier reads W3C trace context from incoming gRPC metadata.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string { return mdGet(metadata.MD(c), key) }
func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// startGRPCSpan is startServerSpan for a gRPC call: the caller's trace
// context comes from its metadata.
func (p *Proxy) startGRPCSpan(ctx context.Context, md metadata.MD, model string) (context.Context, trace.Span) {
	if !p.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	parent := p.cfg.Propagator.Extract(ctx, metadataCarrier(md))
	return p.cfg.Tracer.Start(parent, "infer "+model, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("batchmesh.model", model), attribute.String("rpc.service", "inference.GRPCInferenceService")))
}
