// Package upstream is the sidecar's client to model runtimes: it sends
// batches as Open Inference Protocol v2 infer requests, probes runtimes for
// readiness and for the binary tensor extension, and forwards the routes the
// sidecar passes through untouched.
//
// A Client keeps one fasthttp.HostClient (a keep-alive connection pool) per
// endpoint address, made on first use and kept until Forget or Close. Infer
// encodes with the binary tensor extension when the endpoint listed
// binary_tensor_data in GET /v2 the last time Probe ran, and with JSON
// otherwise (an endpoint never probed gets JSON, which every v2 runtime
// reads). Whatever the application sent, the sidecar thus speaks binary to the
// runtimes that can.
//
// Deadlines: every call ends at its ctx's deadline (30 s by default when ctx
// has none), enforced by the connection's read and write deadlines. fasthttp
// cannot abandon a call when ctx is cancelled without a deadline; a cancelled
// ctx is only seen before the call starts. A call that finds a kept-alive
// connection closed by the runtime (nothing read back, or the write failed) is
// retried once on a fresh connection: v2 routes have no side effects, and
// runtimes close idle connections on their own schedule.
//
// Errors are *inference.Error values whose Kind says what the caller should
// do (see Infer). Failures to reach a runtime at all also match ErrConnect,
// the signal to mark an endpoint unhealthy.
//
// Ownership: Infer keeps nothing of the request after it returns, and the
// Response it returns owns its bytes (binary outputs share one buffer, copied
// once per call). Forward fills a response the caller owns.
//
// Concurrency: a Client is safe for concurrent use. The hot path looks the
// endpoint up in a sync.Map without locking, reuses pooled fasthttp requests,
// responses and body buffers, and starts no goroutines (fasthttp's pool runs
// one idle-connection cleaner per endpoint while it has connections).
//
// Metrics: none of its own. Each call returns what the caller records
// (Reply.Status, Reply.LoadReport, the error's kind), so that proxy counts
// batchmesh_upstream_requests_total and batchmesh_upstream_duration_seconds
// with its model and endpoint labels.
package upstream
