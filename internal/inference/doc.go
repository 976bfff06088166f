// Package inference is batchmesh's shared vocabulary: tensors, inference
// requests and responses, rows, and the errors every stage reports.
//
// It imports only the standard library, so that every other package
// (codecs, cache, batcher, balancer, upstream, proxy and the reference
// runtime) can speak it without importing each other.
//
// A Tensor keeps its elements in one canonical form whatever the wire
// encoding was: the little-endian, row-major layout of the Open Inference
// Protocol's binary tensor extension, where a BYTES element is a 4-byte
// little-endian length followed by its bytes. JSON and binary requests for the
// same values therefore decode to identical bytes, and a row of a tensor (a
// slice along dim 0) is a contiguous byte range that a cache can hash as it is.
//
// This package exports no metrics.
package inference
