package proxy

import (
	"context"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/inference"
	"github.com/batchmesh/batchmesh/internal/upstream"
)

// requestHeaderCarrier reads W3C trace context from a fasthttp request.
type requestHeaderCarrier struct{ h *fasthttp.RequestHeader }

func (c requestHeaderCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestHeaderCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c requestHeaderCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// headersCarrier collects the headers a propagator injects.
type headersCarrier struct{ hs *[]upstream.Header }

func (c headersCarrier) Get(key string) string {
	for _, h := range *c.hs {
		if h.Key == key {
			return h.Value
		}
	}
	return ""
}
func (c headersCarrier) Set(key, value string) {
	*c.hs = append(*c.hs, upstream.Header{Key: key, Value: value})
}
func (c headersCarrier) Keys() []string {
	keys := make([]string, len(*c.hs))
	for i, h := range *c.hs {
		keys[i] = h.Key
	}
	return keys
}

// startServerSpan starts the span of one application request under ctx,
// continuing the caller's trace, and returns ctx with it. With tracing off
// it returns ctx and a no-op span and does not parse the headers.
func (p *Proxy) startServerSpan(ctx context.Context, rc *fasthttp.RequestCtx, model string) (context.Context, trace.Span) {
	if !p.tracing {
		return ctx, trace.SpanFromContext(ctx)
	}
	parent := p.cfg.Propagator.Extract(ctx, requestHeaderCarrier{&rc.Request.Header})
	return p.cfg.Tracer.Start(parent, "infer "+model, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("batchmesh.model", model)))
}

// endServerSpan records the outcome and ends the span.
func endServerSpan(span trace.Span, status int, err error, attrs ...attribute.KeyValue) {
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	span.SetAttributes(attrs...)
	if err != nil {
		span.RecordError(err)
		if status >= 500 || inference.KindOf(err) == inference.KindDeadline {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}
