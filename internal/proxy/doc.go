// Package proxy is the one place that wires the sidecar's stages together:
// HTTP routes (fasthttp) → codec → batch lanes → balancer → upstream. It
// also serves the admin endpoints and owns the health checker and drain.
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
