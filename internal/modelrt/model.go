package modelrt

import (
	"context"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// TensorSpec describes one input or output of a model, as the v2 model
// metadata shows it. A -1 dimension (or a nil Shape with AnyShape set) is
// variable.
type TensorSpec struct {
	Name     string
	DataType string // wire name, e.g. "FP32"; "" means any datatype
	Shape    []int64
}

// Model computes one batch. Implementations must give every row the same
// output bytes whether it is computed alone or inside any batch, and must be
// safe for concurrent use by several slots.
type Model interface {
	// Inputs and Outputs describe the model for its metadata route.
	Inputs() []TensorSpec
	Outputs() []TensorSpec
	// Infer computes every output for all rows of req's inputs (dim 0 is the
	// batch). req has been checked with Validate. It may block for as long as
	// the computation takes (a simulator sleeps) and returns early with
	// ctx.Err() if ctx ends first.
	Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error)
	// Validate checks req's inputs against the model (names, datatypes, row
	// shapes) and returns a KindInvalid *inference.Error naming what is wrong.
	Validate(req *inference.Request) error
}
