// Package batch gathers inference rows from many callers into batches for a
// model version's endpoints and splits the answers back.
//
// A Lane serves one (model, version). Requests enter with Submit and wait in
// a group queue: only requests with the same group key (model, version,
// route, datatypes, non-batch shapes, requested outputs) share a batch. Each
// group keeps one FIFO per priority. A request larger than MaxBatchSize rows
// is cut into pieces that ride in several batches and are put back together
// in order.
//
// Dispatch is work-conserving and needs no timer on an idle system:
//
//   - an endpoint with a free slot (fewer batches running than its Slots)
//     takes whatever is queued at once, up to MaxBatchSize rows;
//   - while every slot is busy, the lane keeps one more batch per endpoint
//     in transit, so that the runtime never waits for a round trip. That
//     batch is sent when it is full, or MaxQueueDelay before the endpoint's
//     running batch is predicted (from its recent latency) to finish, so it
//     carries every row that arrived meanwhile and arrives as the slot frees.
//
// That is Config.Policy PolicyTransit. PolicyCohort (policy.go) adds what
// it learns of closed-loop callers, who come back right after their
// answer: when most do, it holds the next batch until they are back
// (bounded by MaxQueueDelay and every member's deadline) instead of
// sending a batch in transit that would split them into two alternating
// cohorts of half the size.
//
// Deadlines: a request's rows are dropped before dispatch once its deadline
// has passed (504), and a request that cannot finish in time behind the
// batches in flight and queued ahead of it, each full, is refused at once
// (429). The queue is bounded
// in rows (429 with a retry hint); a higher-priority request may push out the
// newest lower-priority ones.
//
// Failures: a batch that fails with a 4xx is bisected so that one bad row
// fails only its own request; a connection failure or 5xx is retried once on
// another endpoint while the deadline allows. A batch with no answer after a
// multiple of its endpoint's p99 latency (Hedge) is sent to another endpoint
// too; the first answer wins and the late attempt counts as a failed call
// for outlier detection. Hedges and retries share a retry budget
// (RetryBudget); circuit breakers (Breakers) bound the batches and rows in
// flight. Every submitted request gets exactly one result.
//
// Metrics (through the metric.Meter in Config), all labelled by model:
//
//	batchmesh_queue_depth          rows waiting (the autoscaling signal)
//	batchmesh_queue_wait_seconds   time from arrival to dispatch, per request
//	batchmesh_batch_rows           rows per upstream batch
//	batchmesh_shed_total{reason}   requests refused: queue_full, deadline, priority
//	batchmesh_hedges_total{outcome} batches sent to a second endpoint: won, lost, failed
//	batchmesh_retry_overflow_total hedges and retries the retry budget refused
//	batchmesh_circuit_open{breaker} 1 while a breaker holds batches back
package batch
