package proxy

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

// Request and response headers of the HTTP surface.
const (
	HeaderPriority  = "X-Batchmesh-Priority"
	HeaderTimeoutMs = "X-Batchmesh-Timeout-Ms"
	HeaderTenant    = "X-Batchmesh-Tenant"
	HeaderCache     = "X-Batchmesh-Cache"
	HeaderBatchSize = "X-Batchmesh-Batch-Size"
	HeaderUpstream  = "X-Batchmesh-Upstream"
)

// Handler serves the application's inference listener.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	path := string(ctx.Path())
	route := codec.ParseRoute(path)
	switch route.Kind {
	case codec.RouteUnknown:
		p.reply(ctx, "", start, inference.Errorf(inference.KindNotFound,
			"proxy: no route %s %s; batchmesh serves the Open Inference Protocol v2 under /v2", ctx.Method(), path))
	case codec.RouteServer:
		writeJSON(ctx, codec.ServerMetadata{Name: "batchmesh", Version: "1", Extensions: []string{codec.ExtensionBinaryTensorData}})
	case codec.RouteLive:
		writeJSON(ctx, codec.Live{Live: true})
	case codec.RouteReady:
		why := p.ready()
		if why != "" && why != "draining" {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
		}
		writeJSON(ctx, codec.Ready{Ready: why == "" || why == "draining"})
	default:
		st := p.st.Load()
		m := st.models[route.Model]
		if m == nil {
			p.reply(ctx, "", start, inference.Errorf(inference.KindNotFound,
				"proxy: unknown model %q; configured models: %v", route.Model, st.names))
			return
		}
		v, err := p.pickVersion(m, route.Version)
		if err != nil {
			p.reply(ctx, m.cfg.Name, start, err)
			return
		}
		if route.Kind == codec.RouteInfer && v.lane != nil {
			if !ctx.IsPost() {
				p.reply(ctx, m.cfg.Name, start, inference.Errorf(inference.KindMethod, "proxy: %s needs POST, got %s", path, ctx.Method()))
				return
			}
			p.infer(ctx, m, v, start)
			return
		}
		p.forward(ctx, m, v, start)
	}
}

// forward passes a request through to one healthy endpoint of v unchanged.
func (p *Proxy) forward(ctx *fasthttp.RequestCtx, m *model, v *version, start time.Time) {
	ep, err := p.pickEndpoint(v)
	if err != nil {
		p.reply(ctx, m.cfg.Name, start, err)
		return
	}
	fctx, cancel := context.WithTimeout(context.Background(), m.cfg.Batching.Timeout)
	defer cancel()
	t0 := time.Now()
	err = p.up.Forward(fctx, ep, &ctx.Request, &ctx.Response)
	code := ctx.Response.StatusCode()
	if err != nil {
		code = inference.HTTPStatus(err)
	}
	p.m.upstream(m.cfg.Name, ep, code, time.Since(t0))
	if err != nil {
		p.reply(ctx, m.cfg.Name, start, err)
		return
	}
	ctx.Response.Header.Set(HeaderUpstream, ep)
	ctx.Response.Header.Set(HeaderCache, "bypass")
	p.m.request(m.cfg.Name, code, "bypass", time.Since(start))
}

// infer decodes a v2 request, runs it through its version's lane and
// encodes the answer the way the application asked for it.
func (p *Proxy) infer(ctx *fasthttp.RequestCtx, m *model, v *version, start time.Time) {
	name := m.cfg.Name
	_, span := p.startServerSpan(ctx, name)
	res, rows, prio, err := p.serveInfer(ctx, m, v, start, span.SpanContext())
	status := fasthttp.StatusOK
	if err != nil {
		if res.status == "" {
			res.status = cacheBypass
			if m.cfg.Cache.Enabled {
				res.status = cacheMiss
			}
		}
		p.replyCache(ctx, name, res.status, start, err)
		status = inference.HTTPStatus(err)
		if k := inference.KindOf(err); k == inference.KindOverloaded || k == inference.KindUnavailable {
			ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(v.lane.RetryAfter().Round(time.Second)/time.Second)))
		}
		ctx.Response.Header.Set(HeaderCache, res.status)
	} else {
		p.m.request(name, status, res.status, time.Since(start))
	}
	if span.IsRecording() {
		endServerSpan(span, status, err,
			attribute.String("batchmesh.version", v.cfg.Version),
			attribute.Int("batchmesh.rows", rows),
			attribute.String("batchmesh.cache", res.status),
			attribute.Float64("batchmesh.queue_wait_ms", float64(res.queueWait)/1e6),
			attribute.String("batchmesh.priority", prio.String()),
			attribute.Int("batchmesh.batch_rows", res.batchRows))
	}
}

// serveInfer decodes a v2 request, runs it through the cache and its
// version's lane and writes the answer the way the application asked for
// it. On error it writes nothing.
func (p *Proxy) serveInfer(ctx *fasthttp.RequestCtx, m *model, v *version, start time.Time, sc trace.SpanContext) (res cachedResult, rows int, prio batch.Priority, err error) {
	prio = batch.PriorityNormal
	hl, err := codec.ParseHeaderLen(ctx.Request.Header.Peek(codec.HeaderContentLength))
	if err != nil {
		return res, 0, prio, err
	}
	body := ctx.PostBody()
	if hl != codec.NoHeader {
		// Binary tensors alias the body, which fasthttp reuses once this
		// handler returns; batches may still read them after a deadline.
		body = slices.Clone(body)
	}
	req, err := codec.DecodeRequest(body, hl)
	if err != nil {
		return res, 0, prio, err
	}
	if rows, err = req.Rows(); err != nil {
		return res, 0, prio, err
	}
	if prio, err = batch.ParsePriority(string(ctx.Request.Header.Peek(HeaderPriority))); err != nil {
		return res, rows, batch.PriorityNormal, err
	}
	timeout := m.cfg.Batching.Timeout
	if s := ctx.Request.Header.Peek(HeaderTimeoutMs); len(s) > 0 {
		ms, err := strconv.ParseUint(string(s), 10, 31)
		if err != nil || ms == 0 {
			return res, rows, prio, inference.Errorf(inference.KindInvalid,
				"proxy: %s must be a positive whole number of milliseconds, got %q", HeaderTimeoutMs, s)
		}
		timeout = min(timeout, time.Duration(ms)*time.Millisecond)
	}
	upParams := upstreamParams(req.Parameters)
	upOutputs := upstreamOutputs(req.Outputs)
	br := &batch.Request{
		Inputs:     req.Inputs,
		Outputs:    upOutputs,
		Parameters: upParams,
		Rows:       rows,
		Group:      groupKey(&req, upParams, upOutputs),
		Priority:   prio,
		Deadline:   start.Add(timeout),
		Trace:      sc,
	}
	if p.cfg.Balancer == BalancerRingHash {
		// A batch goes to one endpoint: batch per tenant so that each
		// tenant keeps its endpoint.
		br.Affinity = string(ctx.Request.Header.Peek(HeaderTenant))
		br.Group += "\x00tenant=" + br.Affinity
	}
	noCache, noStore := cacheControl(ctx.Request.Header.Peek(fasthttp.HeaderCacheControl))
	if m.cfg.Cache.Enabled && !(noCache && noStore) {
		res, err = p.inferCached(m, v, br, string(ctx.Request.Header.Peek(HeaderTenant)), noCache, noStore)
	} else {
		var out batch.Result
		out, err = v.lane.Submit(context.Background(), br)
		res = cachedResult{outputs: out.Outputs, status: cacheBypass, batchRows: out.BatchRows, endpoint: out.Endpoint, queueWait: out.QueueWait}
	}
	if err != nil {
		return res, rows, prio, err
	}
	resp := inference.Response{ModelName: m.cfg.Name, ModelVersion: v.cfg.Version, ID: req.ID, Outputs: res.outputs}
	out, headerLen, err := codec.EncodeResponse(ctx.Response.Body()[:0], &resp, req.BinaryOutput)
	if err != nil {
		return res, rows, prio, err
	}
	ctx.Response.SetBodyRaw(out)
	if headerLen != codec.NoHeader {
		ctx.Response.Header.Set(codec.HeaderContentLength, strconv.Itoa(headerLen))
		ctx.SetContentType("application/octet-stream")
	} else {
		ctx.SetContentType("application/json")
	}
	if res.batchRows > 0 {
		ctx.Response.Header.Set(HeaderBatchSize, strconv.Itoa(res.batchRows))
		ctx.Response.Header.Set(HeaderUpstream, res.endpoint)
	}
	ctx.Response.Header.Set(HeaderCache, res.status)
	return res, rows, prio, nil
}

// upstreamParams drops the request parameters that only say how the
// application wants its reply encoded.
func upstreamParams(ps inference.Parameters) inference.Parameters {
	if len(ps) == 0 {
		return nil
	}
	out := make(inference.Parameters, len(ps))
	for k, v := range ps {
		if k != inference.ParamBinaryDataOutput {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// upstreamOutputs keeps the requested output names and their semantic
// parameters, without the encoding flag.
func upstreamOutputs(os []inference.OutputSpec) []inference.OutputSpec {
	if os == nil {
		return nil
	}
	out := make([]inference.OutputSpec, len(os))
	for i, o := range os {
		out[i] = inference.OutputSpec{Name: o.Name, Parameters: upstreamParamsOf(o.Parameters, inference.ParamBinaryData)}
	}
	return out
}

func upstreamParamsOf(ps inference.Parameters, drop string) inference.Parameters {
	if len(ps) == 0 {
		return nil
	}
	out := make(inference.Parameters, len(ps))
	for k, v := range ps {
		if k != drop {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// groupKey says which requests may share a batch: same inputs (name,
// datatype, row shape, parameters), same requested outputs and the same
// semantic parameters. The model and version are the lane's.
func groupKey(req *inference.Request, params inference.Parameters, outputs []inference.OutputSpec) string {
	var b strings.Builder
	for i := range req.Inputs {
		in := &req.Inputs[i]
		b.WriteString(in.Name)
		b.WriteByte('|')
		b.WriteString(in.DataType.String())
		for _, d := range in.Shape[1:] {
			b.WriteByte(',')
			b.WriteString(strconv.FormatInt(d, 10))
		}
		writeParams(&b, in.Parameters)
		b.WriteByte(';')
	}
	b.WriteString("->")
	if outputs == nil {
		b.WriteByte('*')
	}
	for _, o := range outputs {
		b.WriteString(o.Name)
		writeParams(&b, o.Parameters)
		b.WriteByte(';')
	}
	writeParams(&b, params)
	return b.String()
}

func writeParams(b *strings.Builder, ps inference.Parameters) {
	if len(ps) == 0 {
		return
	}
	keys := make([]string, 0, len(ps))
	for k := range ps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b.WriteByte('{')
	for _, k := range keys {
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		switch v := ps[k].(type) {
		case string:
			b.WriteString(strconv.Quote(v))
		case bool:
			b.WriteString(strconv.FormatBool(v))
		case int64:
			b.WriteString(strconv.FormatInt(v, 10))
		case float64:
			b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		}
		b.WriteByte(',')
	}
	b.WriteByte('}')
}

// reply writes err in the v2 error shape with its status and counts it.
func (p *Proxy) reply(ctx *fasthttp.RequestCtx, model string, start time.Time, err error) {
	p.replyCache(ctx, model, cacheBypass, start, err)
}

// replyCache is reply for a request whose cache result (the cache label of
// batchmesh_requests_total, as its X-Batchmesh-Cache header) is known.
func (p *Proxy) replyCache(ctx *fasthttp.RequestCtx, model, cacheResult string, start time.Time, err error) {
	code := inference.HTTPStatus(err)
	ctx.Response.Reset()
	if code == fasthttp.StatusTooManyRequests || code == fasthttp.StatusServiceUnavailable {
		ctx.Response.Header.Set("Retry-After", "1") // callers that know better set it after
	}
	ctx.SetStatusCode(code)
	ctx.SetContentType("application/json")
	ctx.SetBody(codec.AppendError(nil, err.Error()))
	if model != "" {
		p.m.request(model, code, cacheResult, time.Since(start))
	}
	if code >= 500 && !errors.Is(err, inference.ErrDeadline) {
		p.cfg.Logger.Debug("request failed", "model", model, "status", code, "err", err)
	}
}
