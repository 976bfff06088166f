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

	"github.com/batchmesh/batchmesh/internal/batch"
	"github.com/batchmesh/batchmesh/internal/cache"
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
func (p *Proxy) Handler(rc *fasthttp.RequestCtx) {
	start := time.Now()
	path := string(rc.Path())
	route := codec.ParseRoute(path)
	switch route.Kind {
	case codec.RouteUnknown:
		p.reply(rc, "", start, inference.Errorf(inference.KindNotFound,
			"proxy: no route %s %s; batchmesh serves the Open Inference Protocol v2 under /v2, OpenAI embeddings at /v1/embeddings and TF Serving predict at /v1/models/{model}:predict", rc.Method(), path))
	case codec.RouteEmbeddings:
		p.serveEmbeddings(rc, start)
	case codec.RouteOpenAIModels:
		p.openAIModels(rc)
	case codec.RouteServer:
		writeJSON(rc, codec.ServerMetadata{Name: "batchmesh", Version: "1", Extensions: []string{codec.ExtensionBinaryTensorData}})
	case codec.RouteLive:
		writeJSON(rc, codec.Live{Live: true})
	case codec.RouteReady:
		why := p.ready()
		if why != "" && why != "draining" {
			rc.SetStatusCode(fasthttp.StatusServiceUnavailable)
		}
		writeJSON(rc, codec.Ready{Ready: why == "" || why == "draining"})
	default:
		p.serveModel(rc, route, start)
	}
}

// serveModel serves a route of one model: inference through its version's
// lane when batching is on, anything else passed through. The request's
// context carries its deadline (the model's timeout, or less with
// X-Batchmesh-Timeout-Ms) and, when tracing, its span.
func (p *Proxy) serveModel(rc *fasthttp.RequestCtx, route codec.Route, start time.Time) {
	st := p.st.Load()
	m := st.models[route.Model]
	if m == nil {
		p.reply(rc, "", start, inference.Errorf(inference.KindNotFound,
			"proxy: unknown model %q; configured models: %v", route.Model, st.names))
		return
	}
	if want := routeProtocol(route.Kind); want != m.cfg.Protocol {
		p.reply(rc, "", start, inference.Errorf(inference.KindNotFound,
			"proxy: model %q speaks protocol %s, not %s; %s", route.Model, m.cfg.Protocol, want, protocolRoutes(m.cfg.Protocol)))
		return
	}
	v, err := p.pickVersion(m, route.Version)
	if err != nil {
		p.reply(rc, m.cfg.Name, start, err)
		return
	}
	p.serveVersion(rc, route, m, v, start)
}

// serveVersion serves a request for version v of model m, as serveModel
// documents.
func (p *Proxy) serveVersion(rc *fasthttp.RequestCtx, route codec.Route, m *model, v *version, start time.Time) {
	timeout, err := requestTimeout(rc, m.cfg.Batching.Timeout)
	if err != nil {
		p.reply(rc, m.cfg.Name, start, err)
		return
	}
	if passesThrough(route, v) {
		// Pass-through needs only the deadline, which the upstream client
		// sets on its connection: no context timer for each request.
		p.forward(deadlineContext{start.Add(timeout)}, rc, m, v, start)
		return
	}
	// The request's own context: fasthttp's RequestCtx is not one (it is
	// reused once the handler returns).
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(timeout))
	defer cancel()
	if !rc.IsPost() {
		p.replyIn(rc, m.cfg.Protocol, m.cfg.Name, cacheBypass, start, inference.Errorf(inference.KindMethod, "proxy: %s needs POST, got %s", rc.Path(), rc.Method()))
		return
	}
	serve := p.serveInfer
	if route.Kind == codec.RoutePredict {
		serve = p.servePredict
	}
	p.infer(ctx, rc, m, v, route.Version != "", start, serve)
}

// passesThrough reports whether a request of route to version v is passed
// through rather than batched: any route but infer and predict, and every
// route of a version without a lane (batching off).
func passesThrough(route codec.Route, v *version) bool {
	return v.lane == nil || (route.Kind != codec.RouteInfer && route.Kind != codec.RoutePredict)
}

// deadlineContext is a context that carries a deadline and is never
// cancelled (Done is nil): for a call that enforces the deadline itself,
// as the upstream client's Forward does on its connection. It saves the
// timer of context.WithDeadline on every pass-through request.
type deadlineContext struct{ deadline time.Time }

func (c deadlineContext) Deadline() (time.Time, bool) { return c.deadline, true }
func (deadlineContext) Done() <-chan struct{}         { return nil }
func (deadlineContext) Err() error                    { return nil }
func (deadlineContext) Value(any) any                 { return nil }

// requestTimeout is the model's timeout, or the X-Batchmesh-Timeout-Ms of
// the request when that is shorter.
func requestTimeout(rc *fasthttp.RequestCtx, timeout time.Duration) (time.Duration, error) {
	return timeoutMs(rc.Request.Header.Peek(HeaderTimeoutMs), timeout)
}

// timeoutMs is timeout, or the X-Batchmesh-Timeout-Ms value s when that is
// shorter; s is empty when the request has none.
func timeoutMs(s []byte, timeout time.Duration) (time.Duration, error) {
	if len(s) == 0 {
		return timeout, nil
	}
	ms, err := strconv.ParseUint(string(s), 10, 31)
	if err != nil || ms == 0 {
		return 0, inference.Errorf(inference.KindInvalid,
			"proxy: %s must be a positive whole number of milliseconds, got %q", HeaderTimeoutMs, s)
	}
	return min(timeout, time.Duration(ms)*time.Millisecond), nil
}

// forward passes a request through to one healthy endpoint of v unchanged.
// An endpoint it cannot reach is reported to the health table.
func (p *Proxy) forward(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version, start time.Time) {
	ep, err := p.pickEndpoint(v)
	if err == nil && p.isGRPC(ep) {
		err = errGRPCPassThrough(m, ep, rc.Path())
	}
	if err != nil {
		p.reply(rc, m.cfg.Name, start, err)
		return
	}
	t0 := time.Now()
	err = p.up.Forward(ctx, ep, &rc.Request, &rc.Response)
	code := rc.Response.StatusCode()
	if err != nil {
		code = inference.HTTPStatus(err)
		if errors.Is(err, inference.ErrUnavailable) {
			p.health.ReportFailure(ep, err)
		}
	}
	p.m.upstream(m.cfg.Name, ep, code, time.Since(t0))
	if !errors.Is(ctx.Err(), context.Canceled) {
		p.health.ReportCall(ep, callFailed(err, code))
	}
	if err != nil {
		p.reply(rc, m.cfg.Name, start, err)
		return
	}
	rc.Response.Header.Set(HeaderUpstream, ep)
	rc.Response.Header.Set(HeaderCache, "bypass")
	p.m.request(m.cfg.Name, code, "bypass", time.Since(start))
}

// serveFunc decodes a request of one protocol, runs it through the cache
// and its version's lane under ctx and writes the answer; on error it
// writes nothing.
type serveFunc func(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version) (res cachedResult, rows int, prio batch.Priority, err error)

// infer runs serve for a batched request and records it: the answer's or
// the error's status (in the model's protocol's error shape), metrics and
// span. A request that did not name its version (pinned false) and finds
// v unable to serve it — no healthy endpoint left, or none reachable — is
// served by another version of the split while its deadline lasts (see
// failoverVersion); it is counted once, with the answer it finally gets.
func (p *Proxy) infer(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version, pinned bool, start time.Time, serve serveFunc) {
	name := m.cfg.Name
	ctx, span := p.startServerSpan(ctx, rc, name)
	var (
		res  cachedResult
		rows int
		prio batch.Priority
		err  error
	)
	v = p.failover(ctx, m, v, pinned, func(v *version) error {
		res, rows, prio, err = serve(ctx, rc, m, v)
		return err
	})
	status := fasthttp.StatusOK
	if err != nil {
		if res.status == "" {
			res.status = cacheBypass
			if m.cfg.Cache.Enabled {
				res.status = cacheMiss
			}
		}
		p.replyIn(rc, m.cfg.Protocol, name, res.status, start, err)
		status = inference.HTTPStatus(err)
		if k := inference.KindOf(err); k == inference.KindOverloaded || k == inference.KindUnavailable {
			rc.Response.Header.Set("Retry-After", strconv.Itoa(int(v.lane.RetryAfter().Round(time.Second)/time.Second)))
		}
		rc.Response.Header.Set(HeaderCache, res.status)
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
// version's lane under ctx and writes the answer the way the application
// asked for it. On error it writes nothing.
func (p *Proxy) serveInfer(ctx context.Context, rc *fasthttp.RequestCtx, m *model, v *version) (res cachedResult, rows int, prio batch.Priority, err error) {
	prio = batch.PriorityNormal
	hl, err := codec.ParseHeaderLen(rc.Request.Header.Peek(codec.HeaderContentLength))
	if err != nil {
		return res, 0, prio, err
	}
	body := rc.PostBody()
	if hl != codec.NoHeader {
		// Binary tensors alias the body, which fasthttp reuses once this
		// handler returns; batches may still read them after a deadline.
		// Take the buffer from fasthttp rather than copy it (a body may be
		// -max-body long), and leave it readable as a raw body, which
		// fasthttp only drops: a fail-over to another version decodes it
		// again (and finds fasthttp's buffer already taken).
		if b := rc.Request.SwapBody(nil); len(b) > 0 {
			body = b
		}
		rc.Request.SetBodyRaw(body)
	}
	req, err := codec.DecodeRequest(body, hl)
	if err != nil {
		return res, 0, prio, err
	}
	if rows, err = req.Rows(); err != nil {
		return res, 0, prio, err
	}
	if prio, err = batch.ParsePriority(string(rc.Request.Header.Peek(HeaderPriority))); err != nil {
		return res, rows, batch.PriorityNormal, err
	}
	noCache, noStore := cacheControl(rc.Request.Header.Peek(fasthttp.HeaderCacheControl))
	res, err = p.runInfer(ctx, m, v, &req, rows, prio, string(rc.Request.Header.Peek(HeaderTenant)), cache.Options{NoLookup: noCache, NoStore: noStore})
	if err != nil {
		return res, rows, prio, err
	}
	resp := inference.Response{ModelName: m.cfg.Name, ModelVersion: v.cfg.Version, ID: req.ID, Outputs: res.outputs}
	out, headerLen, err := codec.EncodeResponse(rc.Response.Body()[:0], &resp, req.BinaryOutput)
	if err != nil {
		return res, rows, prio, err
	}
	rc.Response.SetBodyRaw(out)
	if headerLen != codec.NoHeader {
		rc.Response.Header.Set(codec.HeaderContentLength, strconv.Itoa(headerLen))
		rc.SetContentType("application/octet-stream")
	} else {
		rc.SetContentType("application/json")
	}
	if res.batchRows > 0 {
		rc.Response.Header.Set(HeaderBatchSize, strconv.Itoa(res.batchRows))
		rc.Response.Header.Set(HeaderUpstream, res.endpoint)
	}
	rc.Response.Header.Set(HeaderCache, res.status)
	return res, rows, prio, nil
}

// runInfer sends a decoded v2 request of rows rows through the cache (when
// the model has it on and opts do not skip it both ways) or straight to v's
// lane. REST and gRPC callers both come here, so that they share batches,
// the row cache and coalescing. The tenant picks the ring hash's endpoint
// and, where configured, the cache scope.
func (p *Proxy) runInfer(ctx context.Context, m *model, v *version, req *inference.Request, rows int, prio batch.Priority, tenant string, opts cache.Options) (cachedResult, error) {
	upParams := upstreamParams(req.Parameters)
	upOutputs := upstreamOutputs(req.Outputs)
	br := &batch.Request{
		Inputs:     req.Inputs,
		Outputs:    upOutputs,
		Parameters: upParams,
		Rows:       rows,
		Group:      groupKey(req, upParams, upOutputs),
		Priority:   prio,
		Affinity:   tenant, // the ring hash keeps a tenant on its endpoint
	}
	if m.cfg.Cache.Enabled && !(opts.NoLookup && opts.NoStore) {
		return p.inferCached(ctx, m, v, br, tenant, opts)
	}
	out, err := v.lane.Submit(ctx, br)
	return cachedResult{outputs: out.Outputs, status: cacheBypass, batchRows: out.BatchRows, endpoint: out.Endpoint, queueWait: out.QueueWait}, err
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
func (p *Proxy) reply(rc *fasthttp.RequestCtx, model string, start time.Time, err error) {
	p.replyCache(rc, model, cacheBypass, start, err)
}

// replyCache is reply for a request whose cache result (the cache label of
// batchmesh_requests_total, as its X-Batchmesh-Cache header) is known.
func (p *Proxy) replyCache(rc *fasthttp.RequestCtx, model, cacheResult string, start time.Time, err error) {
	code, body := p.failed(model, cacheResult, start, err)
	rc.Response.Reset()
	if retryLater(code) {
		rc.Response.Header.Set("Retry-After", "1") // callers that know better set it after
	}
	rc.SetStatusCode(code)
	rc.SetContentType("application/json")
	rc.SetBody(body)
}

// failed counts err as the answer to a request of model (when known),
// logs a server-side failure, and returns the answer's status and JSON
// body, as every error answer of the inference listener has them.
func (p *Proxy) failed(model, cacheResult string, start time.Time, err error) (code int, body []byte) {
	code = inference.HTTPStatus(err)
	if model != "" {
		p.m.request(model, code, cacheResult, time.Since(start))
	}
	if code >= 500 && !errors.Is(err, inference.ErrDeadline) {
		p.cfg.Logger.Debug("request failed", "model", model, "status", code, "err", err)
	}
	return code, codec.AppendError(nil, err.Error())
}

// retryLater reports whether an error answer of code says Retry-After.
func retryLater(code int) bool {
	return code == fasthttp.StatusTooManyRequests || code == fasthttp.StatusServiceUnavailable
}
