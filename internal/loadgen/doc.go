// Package loadgen is a closed-loop load generator for Open Inference
// Protocol v2 infer endpoints: batchmesh's sidecar, a model runtime, or
// anything else that answers POST /v2/models/{m}/infer.
//
// Run starts Config.Clients clients, each sending one request, waiting for
// its answer and sending the next, until a duration has passed or a number
// of requests has been sent. It is meant to share a small machine with the
// system under test, so it stays light on CPU: request bodies are encoded
// once before the run (a pool of Distinct bodies plus a hot set of HotSet
// for the Repeat share), each client reuses one fasthttp request and
// response over a shared HostClient with a connection per client, and
// latencies go into per-client log-bucket histograms merged at the end. The
// client loop does not allocate after its first request.
//
// With Config.Rate the run is open-loop (openloop.go): requests leave at
// the arrival times of a seeded Poisson process, optionally stepping or
// bursting to another rate (RatePattern), whether or not the earlier ones
// were answered; Clients bounds the requests in flight, an arrival that
// finds them all busy is dropped and counted, and latency counts from the
// scheduled arrival, so a slow server cannot hide in a slow sender.
//
// Bodies are v2 JSON, or the binary tensor extension with Config.Binary, of
// one input of shape [rows, Cols]. Values are pseudo-random from
// Config.Seed: floats in [-1, 1), integers in [0, 30000) (usable as token
// ids), eight-letter strings for BYTES. No row appears twice in the pool, so
// the only cache hits a run causes are those of its Repeat share.
//
// A Result counts requests by status (transport errors under 0), rows and
// latency percentiles of the successful ones, and batchmesh's
// X-Batchmesh-Batch-Size and X-Batchmesh-Cache response headers where
// present. FormatComparison sets two Results side by side, as the benchmarks
// report them: ratios measured back to back on one machine.
//
// loadgen is a client at the edge, like upstream: it uses fasthttp directly.
// It exports no metrics; examples/bench is its command-line front end.
package loadgen
