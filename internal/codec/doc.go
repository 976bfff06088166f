// Package codec translates between wire formats and batchmesh's inference
// vocabulary.
//
// This file set implements the Open Inference Protocol v2 REST surface
// (KServe, Triton, MLServer, OpenVINO): inference requests and responses in
// JSON, with nested or flat data and every datatype, and the binary tensor
// extension, where a JSON header of Inference-Header-Content-Length bytes is
// followed by raw tensors (parameters.binary_data_size) in the order the
// tensors are listed.
//
// Decoding produces tensors in the canonical layout of package inference
// (little-endian, row-major, BYTES length-prefixed), so that a JSON and a
// binary request carrying the same values decode to the same bytes. Binary
// tensors alias the body they were decoded from: the caller must keep the
// body unchanged while it uses them, and copy them before the body is reused.
// JSON tensors own fresh buffers.
//
// Every error a decoder returns is an *inference.Error of KindInvalid whose
// message names the field or tensor and says what was expected. Encoders
// fail only on values the chosen encoding cannot carry (NaN or infinity in
// JSON, BYTES that are not UTF-8 in JSON).
//
// The functions are safe for concurrent use; they keep nothing after they
// return. This package exports no metrics.
package codec
