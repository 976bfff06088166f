package modelrt

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	8 bytes    N, the header length, unsigned little-endian
//	N bytes    a JSON object: {"NAME": {"dtype": "F32", "shape": [2, 3],
//	           "data_offsets": [BEGIN, END]}, ..., "__metadata__": {"k": "v"}}
//	           optionally padded with trailing spaces
//	rest       the data: tensor NAME is rest[BEGIN:END], little-endian,
//	           row-major
//
// The parser is strict: every tensor needs all three fields and no others,
// the data is exactly covered by the tensors with no gap or overlap (as the
// format requires, so that a file cannot hide a second payload), and each
// tensor's byte length matches its dtype and shape.

const (
	// maxHeaderBytes bounds the JSON header, as the reference
	// implementation does.
	maxHeaderBytes = 100 << 20
	// metadataKey is the reserved header key of the free-form metadata.
	metadataKey = "__metadata__"
	// SupportedDTypes lists the safetensors dtypes this package reads and
	// writes, for error messages.
	SupportedDTypes = "F32"
)

// dtypeSize returns the bytes per element of a supported dtype, or 0.
func dtypeSize(dtype string) int {
	if dtype == "F32" {
		return 4
	}
	return 0
}

// WeightTensor is one named tensor of a safetensors file.
type WeightTensor struct {
	Name  string
	DType string  // safetensors dtype; see SupportedDTypes
	Shape []int64 // empty for a scalar
	Data  []byte  // little-endian, row-major: elements × dtype size bytes
}

// F32Tensor returns a WeightTensor of dtype F32 holding values, which must
// have as many elements as shape asks for (WriteSafetensors checks).
func F32Tensor(name string, shape []int64, values []float32) WeightTensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return WeightTensor{Name: name, DType: "F32", Shape: slices.Clone(shape), Data: data}
}

// Float32s decodes an F32 tensor into a new slice.
func (t *WeightTensor) Float32s() ([]float32, error) {
	if t.DType != "F32" {
		return nil, fmt.Errorf("modelrt: tensor %q: dtype %q, want F32", t.Name, t.DType)
	}
	if len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("modelrt: tensor %q: %d bytes is not a whole number of F32 elements", t.Name, len(t.Data))
	}
	v := make([]float32, len(t.Data)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return v, nil
}

// Weights is the content of a safetensors file: its tensors, in the order of
// their data, and its free-form metadata (nil when the file has none).
//
// Weights from ParseSafetensors alias the parsed buffer. A Weights is safe
// for concurrent reads; nothing in this package modifies one after it is
// built.
type Weights struct {
	Tensors  []WeightTensor
	Metadata map[string]string
}

// Tensor returns the tensor with the given name, or nil.
func (w *Weights) Tensor(name string) *WeightTensor {
	for i := range w.Tensors {
		if w.Tensors[i].Name == name {
			return &w.Tensors[i]
		}
	}
	return nil
}

// shapeString writes a shape as "[2,3]".
func shapeString(shape []int64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range shape {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(d, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// shapeBytes returns the bytes that shape needs at size bytes per element;
// ok is false for a negative dimension or a count over 2^63.
func shapeBytes(shape []int64, size int) (n uint64, ok bool) {
	n = uint64(size)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d != 0 && n > math.MaxInt64/uint64(d) {
			return 0, false
		}
		n *= uint64(d)
	}
	return n, true
}
