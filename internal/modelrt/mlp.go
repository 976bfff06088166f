package modelrt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/batchmesh/batchmesh/internal/inference"
)

// MLP names of the model's one input and one output.
const (
	MLPInput  = "input"
	MLPOutput = "output"
)

// MLP is a float32 multi-layer perceptron, the reference runtime's real
// model: y = Lₖ(…ReLU(L₁(ReLU(L₀(x))))), where layer i is x·Wᵢᵀ + bᵢ. It
// takes one FP32 input "input" of shape [n, in] and returns one FP32 output
// "output" of shape [n, out].
//
// A batch runs as one blocked matrix product per layer, so a batch of rows
// costs much less per row than rows one by one, yet every row's output is
// bit-identical whether it is computed alone or in any batch (see
// kernel.go).
//
// An MLP is immutable after NewMLP and safe for concurrent use; Infer
// allocates its outputs, which the caller owns, and reads the request's
// input only during the call.
type MLP struct {
	layers  []*dense
	sizes   []int // widths, input first
	simd    bool
	scratch sync.Pool // of *[]float32, activations for one call
}

// LoadMLP reads an MLP from a safetensors file (see NewMLP).
func LoadMLP(path string) (*MLP, error) {
	m, err := loadMLP(path)
	if err != nil {
		return nil, fmt.Errorf("modelrt: %w", err)
	}
	return m, nil
}

func loadMLP(path string) (*MLP, error) {
	w, err := readSafetensors(path)
	if err != nil {
		return nil, err
	}
	m, err := newMLP(w, haveSIMD())
	if err != nil {
		return nil, fmt.Errorf("mlp weights %s: %w", path, err)
	}
	return m, nil
}

// NewMLP builds an MLP from weights holding, for each layer i = 0, 1, …,
// exactly "layers.{i}.weight" of shape [out, in] and "layers.{i}.bias" of
// shape [out], all F32, each layer's in equal to the previous layer's out.
// It copies what it needs; w may be discarded afterwards.
func NewMLP(w *Weights) (*MLP, error) {
	m, err := newMLP(w, haveSIMD())
	if err != nil {
		return nil, fmt.Errorf("modelrt: mlp weights: %w", err)
	}
	return m, nil
}

// newMLP is NewMLP choosing the kernels: simd requires haveSIMD.
func newMLP(w *Weights, simd bool) (*MLP, error) {
	var layers []*dense
	var sizes []int
	used := 0
	for i := 0; ; i++ {
		wt := w.Tensor("layers." + strconv.Itoa(i) + ".weight")
		bt := w.Tensor("layers." + strconv.Itoa(i) + ".bias")
		if wt == nil && bt == nil {
			break
		}
		if wt == nil || bt == nil {
			return nil, fmt.Errorf("layer %d needs both layers.%d.weight and layers.%d.bias", i, i, i)
		}
		used += 2
		if wt.DType != "F32" || bt.DType != "F32" {
			return nil, fmt.Errorf("layer %d: weights must be F32, got %s and %s", i, wt.DType, bt.DType)
		}
		if len(wt.Shape) != 2 || wt.Shape[0] < 1 || wt.Shape[1] < 1 {
			return nil, fmt.Errorf("tensor %q: shape %s, want [out, in] with both at least 1", wt.Name, shapeString(wt.Shape))
		}
		out, in := wt.Shape[0], wt.Shape[1]
		if out > math.MaxInt32 || in > math.MaxInt32 {
			return nil, fmt.Errorf("tensor %q: shape %s is too large", wt.Name, shapeString(wt.Shape))
		}
		if len(bt.Shape) != 1 || bt.Shape[0] != out {
			return nil, fmt.Errorf("tensor %q: shape %s, want [%d] to match %q", bt.Name, shapeString(bt.Shape), out, wt.Name)
		}
		if i == 0 {
			sizes = append(sizes, int(in))
		} else if int(in) != sizes[i] {
			return nil, fmt.Errorf("tensor %q: shape %s takes %d inputs but layer %d has %d outputs", wt.Name, shapeString(wt.Shape), in, i-1, sizes[i])
		}
		sizes = append(sizes, int(out))
		wv, err := wt.Float32s()
		if err != nil {
			return nil, err
		}
		bv, err := bt.Float32s()
		if err != nil {
			return nil, err
		}
		layers = append(layers, packDense(wv, bv, int(in), int(out)))
	}
	if len(layers) == 0 {
		return nil, errors.New("no layers: want tensors layers.0.weight [out, in] and layers.0.bias [out], then layers.1.…")
	}
	if used != len(w.Tensors) {
		for _, t := range w.Tensors {
			if !isLayerTensor(t.Name, len(layers)) {
				return nil, fmt.Errorf("unexpected tensor %q: an MLP has only layers.{i}.weight and layers.{i}.bias for i in [0, %d)", t.Name, len(layers))
			}
		}
	}
	return &MLP{layers: layers, sizes: sizes, simd: simd}, nil
}

// isLayerTensor reports whether name is a weight or bias of a layer < n.
func isLayerTensor(name string, n int) bool {
	rest, ok := strings.CutPrefix(name, "layers.")
	if !ok {
		return false
	}
	idx, kind, ok := strings.Cut(rest, ".")
	i, err := strconv.Atoi(idx)
	return ok && err == nil && strconv.Itoa(i) == idx && i < n && (kind == "weight" || kind == "bias")
}

// Sizes returns the layer widths, input first, e.g. [512 1024 512 16].
func (m *MLP) Sizes() []int { return append([]int(nil), m.sizes...) }

func (m *MLP) in() int  { return m.sizes[0] }
func (m *MLP) out() int { return m.sizes[len(m.sizes)-1] }

// Inputs describes the one input: FP32 [-1, in].
func (m *MLP) Inputs() []TensorSpec {
	return []TensorSpec{{Name: MLPInput, DataType: "FP32", Shape: []int64{-1, int64(m.in())}}}
}

// Outputs describes the one output: FP32 [-1, out].
func (m *MLP) Outputs() []TensorSpec {
	return []TensorSpec{{Name: MLPOutput, DataType: "FP32", Shape: []int64{-1, int64(m.out())}}}
}

// Validate checks that req has exactly one input, "input", of FP32 [n, in],
// with data to match. Errors are KindInvalid.
func (m *MLP) Validate(req *inference.Request) error {
	want := fmt.Sprintf("[-1,%d] of FP32", m.in())
	if len(req.Inputs) != 1 {
		return inference.Errorf(inference.KindInvalid, "modelrt: the model takes one input %q of shape %s, got %d inputs", MLPInput, want, len(req.Inputs))
	}
	t := &req.Inputs[0]
	if t.Name != MLPInput {
		return inference.Errorf(inference.KindInvalid, "modelrt: unknown input %q; the model takes one input %q of shape %s", t.Name, MLPInput, want)
	}
	if t.DataType != inference.FP32 || len(t.Shape) != 2 || t.Shape[1] != int64(m.in()) || t.Shape[0] < 0 {
		return inference.Errorf(inference.KindInvalid, "modelrt: input %q: expected shape %s, got %s of %s", t.Name, want, inference.FormatShape(t.Shape), t.DataType)
	}
	if err := t.Validate(); err != nil {
		return inference.Errorf(inference.KindInvalid, "modelrt: %w", err)
	}
	return nil
}

// Infer computes the output for every row of req's input. It checks req
// with Validate again (cheaply), and ctx between layers.
func (m *MLP) Infer(ctx context.Context, req *inference.Request) ([]inference.Tensor, error) {
	if err := m.Validate(req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := &req.Inputs[0]
	n := int(t.Shape[0])
	out := make([]byte, 4*n*m.out())
	if n > 0 {
		if err := m.forward(ctx, out, t.Data, n); err != nil {
			return nil, err
		}
	}
	return []inference.Tensor{{
		Name:     MLPOutput,
		DataType: inference.FP32,
		Shape:    []int64{int64(n), int64(m.out())},
		Data:     out,
	}}, nil
}

// forward runs n rows of canonical FP32 input bytes through the layers and
// writes the canonical output bytes to dst.
func (m *MLP) forward(ctx context.Context, dst, src []byte, n int) error {
	in, maxStride := m.in(), 0
	for _, l := range m.layers {
		maxStride = max(maxStride, l.stride())
	}
	need := n * (in + 2*maxStride)
	buf, _ := m.scratch.Get().(*[]float32)
	if buf == nil || cap(*buf) < need {
		b := make([]float32, need)
		buf = &b
	}
	defer m.scratch.Put(buf)
	s := (*buf)[:need]
	x, a, b := s[:n*in], s[n*in:n*(in+maxStride)], s[n*(in+maxStride):]

	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
	ld := in
	for i, l := range m.layers {
		if i > 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		l.forward(a, l.stride(), x, ld, n, i < len(m.layers)-1, m.simd)
		x, a, b, ld = a, b, a, l.stride()
	}
	outW := m.out()
	for r := range n {
		row := x[r*ld : r*ld+outW]
		o := dst[4*r*outW:]
		for j, v := range row {
			binary.LittleEndian.PutUint32(o[4*j:], math.Float32bits(v))
		}
	}
	return nil
}
