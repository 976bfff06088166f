// Package cache answers repeated inference rows without touching a runtime:
// a row cache bounded by bytes and entries with a TTL per model, canonical
// row keys, and in-flight coalescing so that an identical row already being
// computed is computed once.
//
// Keys are 256-bit SHA-256 digests over everything that decides a row's
// answer (see Scope and Keys): model, resolved version, protocol, route,
// every input's name, datatype, row shape and canonical row bytes (so JSON
// and binary encodings of the same row share an entry), the requested
// outputs, the request parameters except the ones that only shape transport,
// and the tenant when the model's cache scope is per tenant. Never the
// request id or tracing headers.
//
// Values are owned copies of a row's outputs. Only successful rows are
// stored. Do is the whole API of a lookup: it answers a request's row keys
// from stored values, from identical rows other requests are computing
// (coalescing; waiters survive the computing caller giving up), and from
// one call to the caller's Compute for the rest. The package knows nothing
// of HTTP or batching: the proxy builds the keys and the Compute.
//
// Metrics (through the metric.Meter in Config):
//
//	batchmesh_cache_hits_total{model}       rows answered from the cache
//	batchmesh_cache_misses_total{model}     rows looked up and not found (or expired)
//	batchmesh_cache_evictions_total{model}  rows evicted for space (not expiry)
//	batchmesh_coalesced_total{model}        rows that waited for an identical row in flight
//	batchmesh_cache_bytes                   bytes held (gauge)
//	batchmesh_cache_entries                 entries held (gauge)
package cache
