package inference

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
)

// Parameters holds the free-form parameters of a request, a tensor or an
// output. Values are string, bool, int64 or float64. A nil map is empty.
type Parameters map[string]any

// Int returns the parameter as an int64 when it is an integral number.
func (p Parameters) Int(key string) (int64, bool) {
	switch v := p[key].(type) {
	case int64:
		return v, true
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
			return int64(v), true
		}
	}
	return 0, false
}

// Bool returns the parameter as a bool when it is one.
func (p Parameters) Bool(key string) (bool, bool) {
	v, ok := p[key].(bool)
	return v, ok
}

// Tensor is a named, typed, shaped array. Data holds every element in the
// canonical layout described in the package comment; it may alias the buffer
// it was decoded from (the decoder says so). Methods never modify Data.
//
// A Tensor is a value; copying it shares Data, Shape and Parameters. It is
// safe for concurrent reads.
type Tensor struct {
	Name       string
	DataType   DataType
	Shape      []int64
	Data       []byte
	Parameters Parameters
}

// MaxElements bounds the element count of one tensor (2^40), so that size
// arithmetic never overflows.
const MaxElements = 1 << 40

// Elements returns the product of the shape. A scalar (empty shape) has one
// element. It fails on a negative dimension or an overflowing product.
func (t *Tensor) Elements() (int64, error) {
	return ShapeElements(t.Name, t.Shape)
}

// ShapeElements returns the element count of shape, naming tensor in errors.
func ShapeElements(tensor string, shape []int64) (int64, error) {
	n := int64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, Errorf(KindInvalid, "input %q: shape %s: dimension %d is %d; dimensions must be 0 or more", tensor, FormatShape(shape), i, d)
		}
		if d != 0 && n > MaxElements/d {
			return 0, Errorf(KindInvalid, "input %q: shape %s has more than %d elements", tensor, FormatShape(shape), int64(MaxElements))
		}
		n *= d
	}
	return n, nil
}

// FormatShape writes a shape as "[2,3]".
func FormatShape(shape []int64) string {
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

// Validate checks that the datatype is known and that Data holds exactly the
// elements the shape asks for. Errors are KindInvalid and name the tensor.
func (t *Tensor) Validate() error {
	if !t.DataType.Valid() {
		return Errorf(KindInvalid, "input %q: unknown datatype; allowed: %s", t.Name, DataTypeNames)
	}
	n, err := t.Elements()
	if err != nil {
		return err
	}
	if sz := t.DataType.Size(); sz > 0 {
		if int64(len(t.Data)) != n*int64(sz) {
			return Errorf(KindInvalid, "input %q: shape %s of %s needs %d elements (%d bytes), data has %d bytes",
				t.Name, FormatShape(t.Shape), t.DataType, n, n*int64(sz), len(t.Data))
		}
		if t.DataType == Bool {
			for _, b := range t.Data {
				if b > 1 {
					return Errorf(KindInvalid, "input %q: BOOL element is %d; must be 0 or 1", t.Name, b)
				}
			}
		}
		return nil
	}
	count, err := CountBytesElements(t.Data)
	if err != nil {
		return Errorf(KindInvalid, "input %q: %w", t.Name, err)
	}
	if count != n {
		return Errorf(KindInvalid, "input %q: shape %s of BYTES needs %d elements, data has %d", t.Name, FormatShape(t.Shape), n, count)
	}
	return nil
}

// CountBytesElements counts the length-prefixed elements of a BYTES buffer.
func CountBytesElements(data []byte) (int64, error) {
	var n int64
	for off := 0; off < len(data); n++ {
		if len(data)-off < 4 {
			return n, Errorf(KindInvalid, "BYTES element %d: %d bytes left, need a 4-byte length", n, len(data)-off)
		}
		l := binary.LittleEndian.Uint32(data[off:])
		off += 4
		if uint64(l) > uint64(len(data)-off) {
			return n, Errorf(KindInvalid, "BYTES element %d: length %d but only %d bytes left", n, l, len(data)-off)
		}
		off += int(l)
	}
	return n, nil
}

// BatchRows returns the size of dim 0, the rows a batcher splits along.
// It fails for a scalar.
func (t *Tensor) BatchRows() (int, error) {
	if len(t.Shape) == 0 {
		return 0, Errorf(KindInvalid, "input %q: a scalar has no batch dimension; shape must be [rows, ...]", t.Name)
	}
	return int(t.Shape[0]), nil
}

// RowOffsets returns len = rows+1 offsets into Data: row i is
// Data[off[i]:off[i+1]]. It appends to dst (which may be nil) and assumes the
// tensor is valid (see Validate).
func (t *Tensor) RowOffsets(dst []int) []int {
	rows, err := t.BatchRows()
	if err != nil {
		return append(dst, 0, len(t.Data))
	}
	if sz := t.DataType.Size(); sz > 0 {
		rowBytes := len(t.Data)
		if rows > 0 {
			rowBytes = len(t.Data) / rows
		}
		for i := 0; i <= rows; i++ {
			dst = append(dst, i*rowBytes)
		}
		return dst
	}
	per := int64(1)
	for _, d := range t.Shape[1:] {
		per *= d
	}
	dst = append(dst, 0)
	off := 0
	for range rows {
		for range per {
			off += 4 + int(binary.LittleEndian.Uint32(t.Data[off:]))
		}
		dst = append(dst, off)
	}
	return dst
}

// Slice returns rows [lo, hi) of a valid tensor, sharing Data. off must be
// the tensor's RowOffsets.
func (t *Tensor) Slice(off []int, lo, hi int) Tensor {
	shape := make([]int64, len(t.Shape))
	copy(shape, t.Shape)
	shape[0] = int64(hi - lo)
	return Tensor{
		Name:       t.Name,
		DataType:   t.DataType,
		Shape:      shape,
		Data:       t.Data[off[lo]:off[hi]:off[hi]],
		Parameters: t.Parameters,
	}
}

// SameRowType reports whether rows of a and b may be stacked into one
// tensor: same name, datatype and shape past dim 0.
func SameRowType(a, b *Tensor) bool {
	if a.Name != b.Name || a.DataType != b.DataType || len(a.Shape) != len(b.Shape) || len(a.Shape) == 0 {
		return false
	}
	for i := 1; i < len(a.Shape); i++ {
		if a.Shape[i] != b.Shape[i] {
			return false
		}
	}
	return true
}

// Concat stacks tensors along dim 0 into a new tensor with freshly allocated
// Data (the one copy a merge needs); a single part is returned as it is,
// sharing its Data. Every part must have the same row type as the first; the
// result takes the first part's name and parameters.
func Concat(parts []Tensor) (Tensor, error) {
	if len(parts) == 0 {
		return Tensor{}, Errorf(KindInternal, "inference: concat of no tensors")
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	first := &parts[0]
	size, rows := 0, int64(0)
	for i := range parts {
		if !SameRowType(first, &parts[i]) {
			return Tensor{}, Errorf(KindInvalid, "input %q: cannot stack %s %s with %s %s",
				first.Name, first.DataType, FormatShape(first.Shape), parts[i].DataType, FormatShape(parts[i].Shape))
		}
		size += len(parts[i].Data)
		rows += parts[i].Shape[0]
	}
	data := make([]byte, 0, size)
	for i := range parts {
		data = append(data, parts[i].Data...)
	}
	shape := make([]int64, len(first.Shape))
	copy(shape, first.Shape)
	shape[0] = rows
	return Tensor{Name: first.Name, DataType: first.DataType, Shape: shape, Data: data, Parameters: first.Parameters}, nil
}
