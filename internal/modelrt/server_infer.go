package modelrt

import (
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchmesh/batchmesh/internal/codec"
	"github.com/batchmesh/batchmesh/internal/inference"
)

func (s *Server) infer(ctx *fasthttp.RequestCtx, name string, m Model) {
	if !s.Ready() {
		ctx.Response.Header.Set("Retry-After", "1")
		writeError(ctx, inference.Errorf(inference.KindUnavailable, "modelrt: not ready"))
		return
	}
	hl, err := codec.ParseHeaderLen(ctx.Request.Header.Peek(codec.HeaderContentLength))
	if err != nil {
		writeError(ctx, err)
		return
	}
	req, err := codec.DecodeRequest(ctx.PostBody(), hl)
	if err != nil {
		writeError(ctx, err)
		return
	}
	resp, err := s.compute(work(ctx), headerCarrier{&ctx.Request.Header}, name, m, &req)
	if err != nil {
		writeError(ctx, err)
		return
	}
	body, headerLen, err := codec.EncodeResponse(ctx.Response.Body()[:0], &resp, req.BinaryOutput)
	if err != nil {
		writeError(ctx, err)
		return
	}
	ctx.Response.SetBodyRaw(body)
	if headerLen != codec.NoHeader {
		ctx.Response.Header.Set(codec.HeaderContentLength, strconv.Itoa(headerLen))
		ctx.SetContentType("application/octet-stream")
	} else {
		ctx.SetContentType("application/json")
	}
	ctx.Response.Header.Set("endpoint-load-metrics", s.load.orca(s.cfg.Slots, len(s.slots), s.backlog()))
}

// compute checks req against model m (called name) and this runtime's
// limits, runs it in a slot and returns the outputs it asked for. The
// server span continues the trace that carrier holds. REST and gRPC calls
// both come here.
func (s *Server) compute(ctx context.Context, carrier propagation.TextMapCarrier, name string, m Model, req *inference.Request) (inference.Response, error) {
	req.Model, req.Version = name, s.cfg.Version
	rows, err := req.Rows()
	if err == nil {
		err = m.Validate(req)
	}
	if err == nil && rows > s.cfg.MaxBatch {
		err = inference.Errorf(inference.KindInvalid, "modelrt: batch of %d rows is over this runtime's limit of %d (-max-batch)", rows, s.cfg.MaxBatch)
	}
	if err == nil {
		err = checkOutputs(req, m)
	}
	if err != nil {
		return inference.Response{}, err
	}
	var span trace.Span
	if s.cfg.Tracer != nil {
		parent := s.cfg.Propagator.Extract(context.Background(), carrier)
		_, span = s.cfg.Tracer.Start(parent, "model infer "+name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("batchmesh.model", name), attribute.Int("batchmesh.rows", rows)))
		defer span.End()
	}
	outs, err := s.run(ctx, m, req, name, rows)
	if err != nil {
		if span != nil {
			span.RecordError(err)
		}
		return inference.Response{}, err
	}
	resp := inference.Response{ModelName: name, ModelVersion: s.cfg.Version, ID: req.ID}
	for _, o := range outs {
		if req.Wants(o.Name) {
			resp.Outputs = append(resp.Outputs, o)
		}
	}
	return resp, nil
}

func checkOutputs(req *inference.Request, m Model) error {
	for _, o := range req.Outputs {
		found := false
		for _, spec := range m.Outputs() {
			if spec.Name == o.Name {
				found = true
				break
			}
		}
		if !found {
			names := make([]string, 0, len(m.Outputs()))
			for _, spec := range m.Outputs() {
				names = append(names, spec.Name)
			}
			return inference.Errorf(inference.KindInvalid, "modelrt: unknown output %q; the model has %v", o.Name, names)
		}
	}
	return nil
}

// run waits for a slot in arrival order and computes the batch.
func (s *Server) run(ctx context.Context, m Model, req *inference.Request, name string, rows int) ([]inference.Tensor, error) {
	attrs := s.attrs[name]
	if s.cfg.MaxQueue > 0 && s.backlog() >= int64(s.cfg.MaxQueue) {
		return nil, inference.Errorf(inference.KindOverloaded, "modelrt: Model is overloaded: %d batches wait for a slot (-max-queue %d)", s.backlog(), s.cfg.MaxQueue)
	}
	s.m.queueDepth.Add(ctx, 1, attrs)
	s.load.waiting.Add(1)
	s.load.admitted.Add(1)
	s.slots <- struct{}{}
	s.load.waiting.Add(-1)
	s.m.queueDepth.Add(ctx, -1, attrs)
	start := time.Now()
	outs, err := m.Infer(ctx, req)
	elapsed := time.Since(start)
	<-s.slots
	s.load.admitted.Add(-1)
	s.load.finish(elapsed, rows)
	if err != nil {
		return nil, err
	}
	s.m.batchRows.Record(ctx, int64(rows), attrs)
	s.m.duration.Record(ctx, elapsed.Seconds(), attrs)
	s.m.rows.Add(ctx, int64(rows), attrs)
	return outs, nil
}

func (s *Server) queued() int64 { return s.load.waiting.Load() }

// backlog is the batches that will still wait once every free slot is
// taken: the queue the ORCA report shows. It is counted from one counter
// (batches running or waiting), so a batch just handed the slot an answer
// released is never counted as waiting.
func (s *Server) backlog() int64 {
	return max(0, s.load.admitted.Load()-int64(s.cfg.Slots))
}

// headerCarrier reads W3C trace context from a fasthttp request.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// work is the context of a REST request's computation. fasthttp cancels a
// RequestCtx as its server shuts down, but a draining runtime finishes the
// requests it has (the drain timeout bounds Shutdown); without this a
// restart answered the batches in flight with 500 "context canceled".
func work(rc *fasthttp.RequestCtx) context.Context { return context.WithoutCancel(rc) }
