// Package proxy is the one place that wires the sidecar's stages together:
// HTTP routes (fasthttp) → codec → cache → batch lanes → balancer →
// upstream. It also serves the admin endpoints and holds the endpoints'
// health table (internal/health), fed by its probes and by the lanes'
// dispatch failures. The sidecar package runs it: listeners, probe loop,
// xDS, drain.
//
// Files by concern: infer.go (routes, the request context, v2 inference),
// cached.go (the cache stage), state.go (building and applying immutable
// configuration snapshots), pickers.go (balancer policies, version and
// pass-through endpoint picks), probes.go (health wiring), proxy.go (New,
// readiness, drain), admin.go, metrics.go, tracing.go.
//
// A request's context is made in the handler: its deadline is the model's
// timeout (or X-Batchmesh-Timeout-Ms when shorter) and it carries the
// request's span. Shared work is not cancelled by one member: a batch runs
// under its own deadline, and a coalesced row is recomputed by its waiters
// if the request computing it gives up.
//
// fasthttp stays at this edge: a request's body is decoded into owned
// tensors before anything crosses a goroutine, and no *fasthttp.RequestCtx
// leaves a handler.
//
// Metrics, recorded through the metric.Meter in Config:
//
//	batchmesh_requests_total{model,code,cache}         application requests answered
//	batchmesh_request_duration_seconds{model}          time to answer one
//	batchmesh_upstream_requests_total{model,endpoint,code}  batches and pass-through calls sent
//	batchmesh_upstream_duration_seconds{model,endpoint}     their latency
//	batchmesh_endpoint_weight{model,version,endpoint}  the weight each endpoint is picked with
//
// and the batch package's batchmesh_queue_depth, batchmesh_queue_wait_seconds,
// batchmesh_batch_rows and batchmesh_shed_total.
package proxy
